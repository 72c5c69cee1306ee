package testkit

import (
	"fmt"
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

// Get returns the body (at most 64 KiB) of a 200 answer to GET url, and an
// error for a failed request or any other status: for polling inside
// Eventually, where a failure is not yet the test's.
func Get(url string) (string, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return string(body), nil
}
