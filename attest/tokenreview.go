package attest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// defaultAPITimeout bounds each API server call of the Kubernetes attestors
// when their Timeout is zero.
const defaultAPITimeout = 5 * time.Second

// TokenReviewConfig configures a [TokenReview] attestor.
type TokenReviewConfig struct {
	// Client talks to the cluster's API server with an identity that may
	// create tokenreviews and get pods (deploy/kubernetes/rbac.yaml). Required; see
	// [NewKubeClient].
	Client kubernetes.Interface

	// Cluster names the cluster. It is copied into [Identity.Cluster], and a
	// [Request] naming a different non-empty ClusterID is rejected. Empty is
	// a valid name (single cluster).
	Cluster string

	// Audiences are sent as the review's spec.audiences, and the review's
	// status.audiences must contain one of them. Empty means "meshca" and
	// "istio-ca". Always sent: an empty spec.audiences would make the API
	// server check its own default audience instead.
	Audiences []string

	// AllowUnboundTokens accepts tokens that are not bound to a pod. The
	// zero value requires pod binding: the token must name a pod, and that
	// pod must exist with the same UID and not be terminating. Pod-bound
	// tokens are always checked against their pod.
	AllowUnboundTokens bool

	// Timeout bounds each API call (the review, the pod lookup). Zero means
	// DefaultAPITimeout.
	Timeout time.Duration
}

// Validate reports whether c is usable. Zero values that have defaults are
// valid.
func (c TokenReviewConfig) Validate() error {
	if c.Client == nil {
		return errors.New("tokenreview attestor: kubernetes client is required")
	}
	if slices.Contains(c.Audiences, "") {
		return errors.New("tokenreview attestor: empty audience")
	}
	if c.Timeout < 0 {
		return fmt.Errorf("tokenreview attestor: negative timeout %s", c.Timeout)
	}
	return nil
}

// TokenReview attests Kubernetes service-account tokens by asking the
// cluster's API server (TokenReview, authentication.k8s.io/v1) and, for
// pod-bound tokens, by fetching the pod. Unlike [JWKS] it sees revocation:
// a token of a deleted pod or service account fails as soon as the API
// server says so. The cost is one or two API round trips per attestation,
// which [NewCached] amortizes.
//
// Thin I/O around the pure parseTokenReview and checkPod. Rejections wrap
// [ErrUnauthenticated]; an API server that cannot be reached or refuses us
// (network, 5xx, throttling, missing RBAC) yields [ErrUnavailable]. A
// TokenReview is safe for concurrent use.
type TokenReview struct {
	cfg   TokenReviewConfig
	rules reviewRules
}

var _ Attestor = (*TokenReview)(nil)

// NewTokenReview applies defaults to cfg, validates it and returns the
// attestor.
func NewTokenReview(cfg TokenReviewConfig) (*TokenReview, error) {
	cfg.Audiences = slices.Clone(cfg.Audiences)
	if len(cfg.Audiences) == 0 {
		cfg.Audiences = slices.Clone(defaultAudiences)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultAPITimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &TokenReview{cfg: cfg, rules: reviewRules{
		cluster: cfg.Cluster, audiences: cfg.Audiences, allowUnbound: cfg.AllowUnboundTokens,
	}}, nil
}

// Attest reviews req.Token with the API server. The identity's Expiry is the
// token's "exp" claim, read without verification once the API server has
// accepted the token (see unverifiedExpiry); zero when the token has none.
func (a *TokenReview) Attest(ctx context.Context, req Request) (Identity, error) {
	if err := checkRequest(req, a.cfg.Cluster); err != nil {
		return Identity{}, err
	}
	review, err := a.review(ctx, req.Token)
	if err != nil {
		return Identity{}, err
	}
	id, err := parseTokenReview(&review.Status, &a.rules)
	if err != nil {
		return Identity{}, fmt.Errorf("cluster %q: %w", a.cfg.Cluster, err)
	}
	if id.PodName != "" {
		if err := a.checkPod(ctx, &id); err != nil {
			return Identity{}, err
		}
	}
	id.Expiry = unverifiedExpiry(req.Token)
	return id, nil
}

func (a *TokenReview) review(ctx context.Context, token string) (*authnv1.TokenReview, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	review, err := a.cfg.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: a.cfg.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		// The error text comes from the transport or the API server's
		// status; neither echoes the request body, so the token stays out.
		return nil, fmt.Errorf("%w: cluster %q: token review: %w", ErrUnavailable, a.cfg.Cluster, err)
	}
	return review, nil
}

// checkPod fetches the pod a token is bound to and checks it is still that
// pod. A pod that no longer exists rejects the token; any other failure to
// fetch it is unavailability.
func (a *TokenReview) checkPod(ctx context.Context, id *Identity) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	pod, err := a.cfg.Client.CoreV1().Pods(id.Namespace).Get(ctx, id.PodName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%w: cluster %q: pod %s/%s of the token no longer exists", ErrUnauthenticated, a.cfg.Cluster, id.Namespace, id.PodName)
	case err != nil:
		return fmt.Errorf("%w: cluster %q: get pod %s/%s: %w", ErrUnavailable, a.cfg.Cluster, id.Namespace, id.PodName, err)
	}
	if err := checkPod(pod, id); err != nil {
		return fmt.Errorf("cluster %q: %w", a.cfg.Cluster, err)
	}
	return nil
}
