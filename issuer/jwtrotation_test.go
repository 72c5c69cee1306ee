package issuer_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/meshca/meshca/issuer"
	"github.com/meshca/meshca/trust"
)

// jwtPublications records what JWTKeys hands the root.
type jwtPublications struct {
	mu   sync.Mutex
	sets [][]trust.JWTAuthority
}

var _ issuer.JWTPublisher = (*jwtPublications)(nil)

func (p *jwtPublications) PublishJWTAuthorities(_ context.Context, as []trust.JWTAuthority) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sets = append(p.sets, as)
	return nil
}

func (p *jwtPublications) last() []trust.JWTAuthority {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sets) == 0 {
		return nil
	}
	return p.sets[len(p.sets)-1]
}

// TestJWTKeysRotateWithoutFailedValidation rotates 60 s intermediates for
// five minutes while minting a JWT-SVID every second. Each token must
// validate against the bundle served just before it was minted (its key
// was published before use) and against every bundle served until it
// expires (its key stays published after its last use).
func TestJWTKeysRotateWithoutFailedValidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := newRotationRig(t, 60*time.Second)
		log, logs := captureLogs(t)
		pub := &jwtPublications{}
		keys, err := issuer.NewJWTKeys(issuer.JWTConfig{
			Issuer: g.iss, DefaultTTL: 10 * time.Second, MaxTTL: 20 * time.Second, Publisher: pub, Logger: log,
		})
		if err != nil {
			t.Fatal(err)
		}
		runInBackground(t, "JWTKeys.Run", keys.Run)
		synctest.Wait()

		aud := []string{"payments"}
		maxKeys := 0
		firstServed := map[string]time.Time{}
		served := func() *jwtbundle.Bundle {
			tb := issuer.ServedBundle(g.loop, keys, east)
			d, _ := tb.Domain(east)
			maxKeys = max(maxKeys, len(d.JWTAuthorities))
			for _, a := range d.JWTAuthorities {
				if _, ok := firstServed[a.KeyID]; !ok {
					firstServed[a.KeyID] = time.Now()
				}
			}
			return jwtBundle(t, tb, east, tb.OwnRoots(), time.Now())
		}
		start := time.Now()
		type minted struct {
			token string
			exp   time.Time
		}
		var live []minted
		kids := map[string]bool{}
		for end := time.Now().Add(5 * time.Minute); time.Now().Before(end); {
			before := served()
			svid, err := keys.Mint(t.Context(), issuer.JWTRequest{Token: goodToken, Audience: aud})
			if err != nil {
				t.Fatalf("mint at %v: %v", time.Now(), err)
			}
			if _, err := jwtsvid.ParseAndValidate(svid.Token, before, aud); err != nil {
				t.Fatalf("a token minted at %v does not validate against the bundle served before it: %v", time.Now(), err)
			}
			// Agents poll or watch the bundle: a key must be out well
			// before its first token, from the preparation of its
			// intermediate (20 s before its activation here) on.
			if !kids[svid.KeyID] && firstServed[svid.KeyID] != start && time.Since(firstServed[svid.KeyID]) < 15*time.Second {
				t.Fatalf("key %s signed at %v, only %v after it was first served", svid.KeyID, time.Now(), time.Since(firstServed[svid.KeyID]))
			}
			kids[svid.KeyID] = true
			live = append(live, minted{svid.Token, svid.ExpiresAt})

			time.Sleep(time.Second)
			synctest.Wait()
			live = slices.DeleteFunc(live, func(m minted) bool { return !time.Now().Before(m.exp) })
			now := served()
			for _, m := range live {
				if _, err := jwtsvid.ParseAndValidate(m.token, now, aud); err != nil {
					t.Fatalf("at %v a token expiring at %v no longer validates against the served bundle: %v", time.Now(), m.exp, err)
				}
			}
		}
		if len(kids) < 5 {
			t.Errorf("%d signing keys in five minutes of 60 s intermediates, want one per intermediate", len(kids))
		}
		if maxKeys > 3 {
			t.Errorf("the bundle held %d JWT keys at once: retired keys are not dropped", maxKeys)
		}
		current, _ := keys.Current()
		if last := pub.last(); len(last) == 0 || !slices.EqualFunc(last, current, func(x, y trust.JWTAuthority) bool { return x.KeyID == y.KeyID }) {
			t.Errorf("the root was last sent %d keys, not the %d current ones", len(last), len(current))
		}
		assertNoSecrets(t, logs.String())
	})
}
