package attest

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// clusterEcho is an attestor for one cluster: it accepts tokens prefixed
// with its name and records the ClusterID it was called with.
func clusterEcho(name string, seen *[]string) *fakeAttestor {
	return &fakeAttestor{fn: func(r Request) (Identity, error) {
		*seen = append(*seen, name+"<-"+r.ClusterID)
		if !strings.HasPrefix(r.Token, name+":") {
			return Identity{}, errors.Join(ErrUnauthenticated, errors.New("foreign token"))
		}
		return Identity{Cluster: r.ClusterID, Namespace: "ns", ServiceAccount: "sa"}, nil
	}}
}

func TestMultiClusterRouting(t *testing.T) {
	var seen []string
	m, err := NewMultiCluster(MultiClusterConfig{
		Clusters: map[string]Attestor{"east": clusterEcho("east", &seen), "west": clusterEcho("west", &seen)},
		Local:    "east",
		Aliases:  map[string]string{"Kubernetes": "east", "west-istio": "west"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		clusterID string
		token     string
		wantErr   error
		wantSeen  string // attestor that must have been called, "" for none
		wantClust string
	}{
		{name: "empty means local", clusterID: "", token: "east:t", wantSeen: "east<-east", wantClust: "east"},
		{name: "by name", clusterID: "west", token: "west:t", wantSeen: "west<-west", wantClust: "west"},
		{name: "istio alias", clusterID: "Kubernetes", token: "east:t", wantSeen: "east<-east", wantClust: "east"},
		{name: "alias to remote", clusterID: "west-istio", token: "west:t", wantSeen: "west<-west", wantClust: "west"},
		{name: "unknown cluster", clusterID: "north", token: "east:t", wantErr: ErrUnauthenticated},
		{name: "alias is case-sensitive", clusterID: "kubernetes", token: "east:t", wantErr: ErrUnauthenticated},
		{name: "token of west presented as east", clusterID: "east", token: "west:t",
			wantErr: ErrUnauthenticated, wantSeen: "east<-east"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen = nil
			id, err := m.Attest(context.Background(), Request{Token: tc.token, ClusterID: tc.clusterID})
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			} else if id.Cluster != tc.wantClust {
				t.Errorf("Cluster = %q, want %q", id.Cluster, tc.wantClust)
			}
			switch {
			case tc.wantSeen == "" && len(seen) != 0:
				t.Errorf("attestors called: %v, want none", seen)
			case tc.wantSeen != "" && (len(seen) != 1 || seen[0] != tc.wantSeen):
				t.Errorf("attestors called: %v, want [%s]", seen, tc.wantSeen)
			}
		})
	}
}

func TestMultiClusterConfigValidate(t *testing.T) {
	a := &fakeAttestor{}
	tests := []struct {
		name string
		cfg  MultiClusterConfig
		want string
	}{
		{"no clusters", MultiClusterConfig{Local: "a"}, "no clusters"},
		{"empty name", MultiClusterConfig{Clusters: map[string]Attestor{"": a}, Local: ""}, "empty cluster name"},
		{"nil attestor", MultiClusterConfig{Clusters: map[string]Attestor{"a": nil}, Local: "a"}, "has no attestor"},
		{"local missing", MultiClusterConfig{Clusters: map[string]Attestor{"a": a}, Local: "b"}, "local cluster"},
		{"empty alias", MultiClusterConfig{Clusters: map[string]Attestor{"a": a}, Local: "a",
			Aliases: map[string]string{"": "a"}}, "empty alias"},
		{"alias shadows", MultiClusterConfig{Clusters: map[string]Attestor{"a": a, "b": a}, Local: "a",
			Aliases: map[string]string{"b": "a"}}, "shadows"},
		{"alias to nowhere", MultiClusterConfig{Clusters: map[string]Attestor{"a": a}, Local: "a",
			Aliases: map[string]string{"k": "z"}}, "unknown cluster"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewMultiCluster(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// An injected istio-agent sends "Kubernetes" unless its cluster was named;
// it reaches the local cluster's attestor unless the configuration gives
// the name to a cluster or an alias.
func TestMultiClusterIstioDefaultClusterID(t *testing.T) {
	tests := []struct {
		name     string
		clusters []string
		aliases  map[string]string
		want     string // attestor called for clusterid "Kubernetes"
	}{
		{name: "unclaimed means local", clusters: []string{"east", "west"}, want: "east<-east"},
		{name: "an alias claims it", clusters: []string{"east", "west"}, aliases: map[string]string{IstioDefaultClusterID: "west"}, want: "west<-west"},
		{name: "a cluster of that name", clusters: []string{"east", IstioDefaultClusterID}, want: "Kubernetes<-Kubernetes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen []string
			cfg := MultiClusterConfig{Clusters: map[string]Attestor{}, Local: "east", Aliases: tc.aliases}
			for _, c := range tc.clusters {
				cfg.Clusters[c] = clusterEcho(c, &seen)
			}
			m, err := NewMultiCluster(cfg)
			if err != nil {
				t.Fatal(err)
			}
			token := strings.SplitN(tc.want, "<-", 2)[0] + ":t"
			if _, err := m.Attest(context.Background(), Request{Token: token, ClusterID: IstioDefaultClusterID}); err != nil {
				t.Fatalf("Attest: %v", err)
			}
			if len(seen) != 1 || seen[0] != tc.want {
				t.Fatalf("attestors called: %v, want [%s]", seen, tc.want)
			}
		})
	}
}
