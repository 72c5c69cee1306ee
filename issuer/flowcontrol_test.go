package issuer_test

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	pb "istio.io/api/security/v1alpha1"

	"github.com/meshca/meshca/attest"
)

// TestServerFlowControlIsFixed speaks HTTP/2 to the issuer's server frame
// by frame and sends it five certificate requests on one connection. The
// server must announce its fixed 64 KiB stream window and send no PING: with
// grpc-go's dynamic windows it answers a request's DATA with a bandwidth
// PING (and a window update) whenever none is outstanding, which is per
// request on a connection that carries one at a time.
func TestServerFlowControlIsFixed(t *testing.T) {
	w := newWireWith(t, true)
	tok := w.token(t, attest.TokenSpec{})
	conn, err := tls.Dial("tcp", w.addr, &tls.Config{
		RootCAs: w.tree.Bundle.Pool(), ServerName: "istiod.istio-system.svc", NextProtos: []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	msg, err := proto.Marshal(&pb.IstioCertificateRequest{Csr: string(csrPEM(t, newKey(t), nil))})
	if err != nil {
		t.Fatal(err)
	}
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) // gRPC message prefix
	body = append(body, msg...)
	var streamWindow uint32
	pings := 0
	for i := range 5 {
		stream := uint32(2*i + 1)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: stream, BlockFragment: requestHeaders(tok), EndHeaders: true,
		}); err != nil {
			t.Fatal(err)
		}
		if err := fr.WriteData(stream, true, body); err != nil {
			t.Fatal(err)
		}
		for done := false; !done; {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
						streamWindow = v
					}
					if err := fr.WriteSettingsAck(); err != nil {
						t.Fatal(err)
					}
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					pings++
					if err := fr.WritePing(true, f.Data); err != nil {
						t.Fatal(err)
					}
				}
			case *http2.MetaHeadersFrame:
				if f.StreamID == stream && f.StreamEnded() {
					if s := f.PseudoValue("status"); s != "" && s != "200" {
						t.Fatalf("request %d: HTTP status %s", i, s)
					}
					for _, hf := range f.RegularFields() {
						if hf.Name == "grpc-status" && hf.Value != "0" {
							t.Fatalf("request %d: grpc-status %s", i, hf.Value)
						}
					}
					done = true
				}
			case *http2.GoAwayFrame:
				t.Fatalf("request %d: GOAWAY %v", i, f.ErrCode)
			}
		}
	}
	if streamWindow != 64<<10 {
		t.Errorf("stream window announced: %d, want the fixed %d", streamWindow, 64<<10)
	}
	if pings != 0 {
		t.Errorf("the server sent %d PINGs over 5 requests, want none (dynamic flow control is on)", pings)
	}
}

// requestHeaders is the HPACK block of a CreateCertificate call.
func requestHeaders(token string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
		{Name: ":path", Value: "/istio.v1.auth.IstioCertificateService/CreateCertificate"},
		{Name: ":authority", Value: "istiod.istio-system.svc"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
		{Name: "authorization", Value: "Bearer " + token},
	} {
		_ = enc.WriteField(f) // a bytes.Buffer never fails
	}
	return buf.Bytes()
}
