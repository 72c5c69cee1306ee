package promtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Families maps metric family names to their types ("counter", "gauge",
// "histogram", ...), as declared by the # TYPE lines of a /metrics page in
// Prometheus's text format.
type Families map[string]string

// ParseFamilies reads the # TYPE lines of a text-format exposition.
func ParseFamilies(text string) Families {
	out := Families{}
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = f[3]
		}
	}
	return out
}

// Add adds every family of o to fs.
func (fs Families) Add(o Families) {
	for n, t := range o {
		fs[n] = t
	}
}

// Family returns the family a series name belongs to: the name itself, or
// for NAME_bucket, NAME_sum and NAME_count the histogram or summary NAME.
// ok is false when no family of fs has the series.
func (fs Families) Family(series string) (family string, ok bool) {
	if _, ok := fs[series]; ok {
		return series, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(series, suffix)
		if !found {
			continue
		}
		if t := fs[base]; t == "histogram" || (t == "summary" && suffix != "_bucket") {
			return base, true
		}
	}
	return "", false
}

// scrapeTimeout bounds one scrape.
const scrapeTimeout = 10 * time.Second

// Scrape GETs url (a /metrics endpoint) and returns the body.
func Scrape(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	// Ask for the text format: promhttp would otherwise pick another one
	// for some Accept headers.
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}
