package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	svidv1 "github.com/spiffe/spire-api-sdk/proto/spire/api/server/svid/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// spireServer is a running SPIRE server.
type spireServer struct {
	*server
	socket string
	conns  []*grpc.ClientConn
}

// spireConfig is a minimal server configuration: loopback, the local
// admin socket, an in-memory CA key (P-256) and the SQLite datastore.
const spireConfig = `server {
    bind_address = "127.0.0.1"
    bind_port = "%s"
    socket_path = "%s"
    trust_domain = "%s"
    data_dir = "%s"
    log_level = "INFO"
    ca_key_type = "ec-p256"
    default_x509_svid_ttl = "1h"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "%s"
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
`

// startSpire writes a server configuration into dir and runs
// `spire-server run` on it.
func startSpire(bin, dir string) (*spireServer, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	port := addr[len("127.0.0.1:"):]
	socket := filepath.Join(dir, "api.sock")
	data := filepath.Join(dir, "data")
	conf := fmt.Sprintf(spireConfig, port, socket, trustDomain, data, filepath.Join(data, "datastore.sqlite3"))
	confPath := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	s, err := startServer("spire-server", dir, bin, nil, "run", "-config", confPath)
	if err != nil {
		return nil, err
	}
	sp := &spireServer{server: s, socket: socket}
	probe, err := sp.dial()
	if err == nil {
		client := svidv1.NewSVIDClient(probe)
		err = s.waitFor(60*time.Second, func() error {
			// The server answers only once its CA is prepared.
			ws, err := newWorkloads(1)
			if err != nil {
				return err
			}
			_, err = client.MintX509SVID(context.Background(), &svidv1.MintX509SVIDRequest{Csr: ws[0].csrDER, Ttl: 3600})
			return err
		})
		probe.Close()
	}
	if err != nil {
		s.stop()
		return nil, err
	}
	return sp, nil
}

func (sp *spireServer) dial() (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+sp.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// clients returns one issueFunc per workload: MintX509SVID with the CSR
// (whose URI SAN names the SPIFFE ID) on the client's own connection to
// the admin socket.
func (sp *spireServer) clients(ws []workload) ([]issueFunc, error) {
	out := make([]issueFunc, len(ws))
	for i, w := range ws {
		conn, err := sp.dial()
		if err != nil {
			return nil, err
		}
		sp.conns = append(sp.conns, conn)
		client := svidv1.NewSVIDClient(conn)
		req := &svidv1.MintX509SVIDRequest{Csr: w.csrDER, Ttl: 3600}
		out[i] = func(ctx context.Context) error {
			resp, err := client.MintX509SVID(ctx, req)
			if err != nil {
				return err
			}
			if len(resp.GetSvid().GetCertChain()) == 0 {
				return errNoCert
			}
			return nil
		}
	}
	return out, nil
}

func (sp *spireServer) close() {
	for _, c := range sp.conns {
		c.Close()
	}
	sp.stop()
}
