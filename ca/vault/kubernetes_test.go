package vault

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/meshca/meshca/test/kubetest"
	"github.com/meshca/meshca/test/vaulttest"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kubernetes login against a real Vault whose kubernetes auth method
// reviews tokens with a real kube-apiserver.
func TestKubernetesLogin(t *testing.T) {
	v := vaulttest.Shared(t)
	kc := kubetest.Start(t, kubetest.Options{Name: "vault-auth"})
	ns := kc.Namespace(t)
	kc.ServiceAccount(t, ns, "vault-reviewer")
	kc.ServiceAccount(t, ns, "meshca-root")
	kc.ServiceAccount(t, ns, "intruder")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := kc.Admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-reviewer-" + ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "vault-reviewer", Namespace: ns}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("bind reviewer: %v", err)
	}

	name := vaulttest.KeyName(t)
	mount := "kubernetes-" + name
	if err := v.Admin.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatalf("enable kubernetes auth: %v", err)
	}
	if _, err := v.Admin.Logical().WriteWithContext(ctx, "auth/"+mount+"/config", map[string]any{
		"kubernetes_host":      kc.URL,
		"kubernetes_ca_cert":   string(kc.CAPEM),
		"token_reviewer_jwt":   kc.Token(t, ns, "vault-reviewer"),
		"disable_local_ca_jwt": true,
	}); err != nil {
		t.Fatalf("configure kubernetes auth: %v", err)
	}
	if err := v.Admin.Sys().PutPolicyWithContext(ctx, name, vaulttest.SignPolicy(name)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Admin.Logical().WriteWithContext(ctx, "auth/"+mount+"/role/meshca", map[string]any{
		"bound_service_account_names":      []string{"meshca-root"},
		"bound_service_account_namespaces": []string{ns},
		"audience":                         kubetest.Issuer,
		"token_policies":                   []string{name},
	}); err != nil {
		t.Fatalf("role: %v", err)
	}

	jwtFile := filepath.Join(t.TempDir(), "token")
	writeJWT := func(token string) {
		if err := os.WriteFile(jwtFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Config{Address: v.Addr, KeyName: name, Auth: AuthConfig{Method: AuthKubernetes,
		Kubernetes: KubernetesConfig{Role: "meshca", JWTFile: jwtFile, Mount: mount}}}

	writeJWT(kc.Token(t, ns, "meshca-root"))
	s := newSigner(t, cfg)
	mustSign(t, s)

	// The file is re-read at every login: with another service account's
	// token in it, the login after a revocation is refused; with a fresh
	// token of the right one, signing works again.
	writeJWT(kc.Token(t, ns, "intruder"))
	old := s.client.Token()
	if err := v.Admin.Auth().Token().RevokeTreeWithContext(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := signErr(s); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("Sign after login as another service account: %v, want ErrPermissionDenied", err)
	}
	if _, err := New(ctx, cfg); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("New with another service account's token: %v, want ErrPermissionDenied", err)
	}
	writeJWT(kc.Token(t, ns, "meshca-root"))
	mustSign(t, s)
	if s.client.Token() == old {
		t.Fatal("signer still holds the revoked token")
	}
}
