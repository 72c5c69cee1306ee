package grpclimit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/meshca/meshca/internal/grpclimit"
	"github.com/meshca/meshca/internal/testkit"
)

// serveHealth serves gRPC's health service with l's options on a loopback
// port and returns its address and health server.
func serveHealth(t *testing.T, l *grpclimit.Limits) (string, *health.Server) {
	t.Helper()
	srv := grpc.NewServer(l.ServerOptions()...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	lis := testkit.Listen(t)
	go func() { _ = srv.Serve(l.Listener(lis)) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), hs
}

// h2Client is a bare HTTP/2 client that sends frames a gRPC client never
// would.
type h2Client struct {
	conn net.Conn
	fr   *http2.Framer
}

func dialH2(t *testing.T, addr string) *h2Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &h2Client{conn: conn, fr: fr}
}

// startCall sends the headers of a call to method on stream 1, with
// extra headers, split into CONTINUATION frames as needed, and no message.
// An error is the server having closed the connection.
func (c *h2Client) startCall(t *testing.T, method string, extra ...hpack.HeaderField) error {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	fields := append([]hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"}, {Name: ":path", Value: method},
		{Name: ":authority", Value: "meshca.test"}, {Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
	}, extra...)
	for _, f := range fields {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	const frag = 16 << 10 // the default SETTINGS_MAX_FRAME_SIZE
	b := block.Bytes()
	first := b[:min(frag, len(b))]
	b = b[len(first):]
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) == 0}); err != nil {
		return err
	}
	for len(b) > 0 {
		n := min(frag, len(b))
		if err := c.fr.WriteContinuation(1, n == len(b), b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// streamEnd reads frames until the server ends stream 1, with a reset
// (its error code), trailers (their grpc-status) or by closing the
// connection, and fails the test if that does not happen within d.
func (c *h2Client) streamEnd(t *testing.T, d time.Duration) string {
	t.Helper()
	if err := c.conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := c.fr.ReadFrame()
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("the server did not end the call within %v", d)
		case err != nil:
			return "connection closed"
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return "reset " + f.ErrCode.String()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				return "trailers, grpc-status" + statusOf(f)
			}
		case *http2.GoAwayFrame:
			return "connection closed"
		}
	}
}

func statusOf(f *http2.MetaHeadersFrame) string {
	for _, h := range f.Fields {
		if h.Name == "grpc-status" {
			return " " + h.Value
		}
	}
	return ""
}

// TestOversizedHeadersAreReset sends a call with 64 headers of 1 KiB,
// which grpc-go would otherwise decode and hold (up to 16 MiB per call,
// waiting for the message): the server resets the call or closes the
// connection at once. A call with a 20 KiB header, the size of a large
// bearer token, still goes through.
func TestOversizedHeadersAreReset(t *testing.T) {
	addr, _ := serveHealth(t, mustLimits(t, grpclimit.Config{}))
	c := dialH2(t, addr)
	var pad []hpack.HeaderField
	for i := range 64 {
		pad = append(pad, hpack.HeaderField{Name: fmt.Sprintf("x-pad-%d", i), Value: strings.Repeat("a", 1<<10)})
	}
	got := "connection closed"
	if err := c.startCall(t, "/grpc.health.v1.Health/Check", pad...); err == nil {
		got = c.streamEnd(t, 10*time.Second)
	}
	if got != "reset "+http2.ErrCodeFrameSize.String() && got != "connection closed" {
		t.Fatalf("a call with 64 KiB of headers ended with %q, want a reset or the connection closed", got)
	}
	t.Logf("a call with 64 KiB of headers: %s", got)

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+strings.Repeat("t", 20<<10))
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("a call with a 20 KiB token: %v", err)
	}
}

// TestCallWithoutRequestEnds sends a call's headers and never its
// message: the server ends the call once RequestTimeout has passed, not
// before.
func TestCallWithoutRequestEnds(t *testing.T) {
	const timeout = 300 * time.Millisecond
	addr, _ := serveHealth(t, mustLimits(t, grpclimit.Config{RequestTimeout: timeout}))
	c := dialH2(t, addr)
	start := time.Now()
	if err := c.startCall(t, "/grpc.health.v1.Health/Check"); err != nil {
		t.Fatal(err)
	}
	got := c.streamEnd(t, 10*time.Second)
	if elapsed := time.Since(start); elapsed < timeout {
		t.Errorf("the call ended after %v, before the request timeout %v (%s)", elapsed, timeout, got)
	}
	t.Logf("a call without its request message ended after %v: %s", time.Since(start).Round(time.Millisecond), got)
}

// TestWatchOutlivesRequestTimeout: a streaming call whose request came
// stays open past RequestTimeout and still receives updates.
func TestWatchOutlivesRequestTimeout(t *testing.T) {
	const timeout = 200 * time.Millisecond
	addr, hs := serveHealth(t, mustLimits(t, grpclimit.Config{RequestTimeout: timeout}))
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * timeout)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	got, err := w.Recv()
	if err != nil {
		t.Fatalf("the watch ended after the request timeout: %v", err)
	}
	if got.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("watch update %v, want NOT_SERVING", got.Status)
	}
}
