package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// server is a system's process, its output kept in a log file in its
// directory.
type server struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startServer runs bin with args in dir, its stdout and stderr in
// dir/NAME.log, and returns once the process has started.
func startServer(name, dir, bin string, env []string, args ...string) (*server, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, f, f
	cmd.Env = append(os.Environ(), env...)
	// Should the driver die without stopping it, the server dies too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(s.done)
	}()
	return s, nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// waitFor polls ready until it returns nil, the process exits or timeout
// passes; the error then carries the end of the process's log.
func (s *server) waitFor(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("%s exited before it was ready: %v\n%s", s.name, err, s.tail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %v: %v\n%s", s.name, timeout, err, s.tail())
		}
	}
}

// tail returns the last 2 KiB of the process's log.
func (s *server) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 2048 {
		b = b[len(b)-2048:]
	}
	return string(b)
}

// stop sends SIGTERM, then SIGKILL if the process has not exited after
// ten seconds, and waits for it.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// freeAddr returns a loopback address with a port free at the time of the
// call.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func canConnect(network, addr string) error {
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// trustDomain is the trust domain every system issues in.
const trustDomain = "cluster.local"

// workload is one client's identity and CSR: a P-256 key and a request
// with no subject and one URI SAN, its SPIFFE ID, the shape Istio's and
// SPIRE's agents send. Every system gets the same set.
type workload struct {
	ns, sa string
	id     *url.URL
	csrDER []byte
	csrPEM string
}

func newWorkloads(n int) ([]workload, error) {
	ws := make([]workload, n)
	for i := range ws {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		sa := fmt.Sprintf("w%d", i)
		id := &url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/ns/bench/sa/" + sa}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id}}, key)
		if err != nil {
			return nil, err
		}
		ws[i] = workload{ns: "bench", sa: sa, id: id, csrDER: der,
			csrPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
	}
	return ws, nil
}

// errNoCert is returned when a response holds no certificate.
var errNoCert = errors.New("response holds no certificate")
