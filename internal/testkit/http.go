package testkit

import (
	"io"
	"net/http"
	"testing"
	"time"
)

// GetText GETs url, waiting at most 10 s, and returns the status code and
// body; a failed request or read fails tb.
func GetText(tb testing.TB, url string) (int, string) {
	tb.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, string(b)
}
