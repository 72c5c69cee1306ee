package attest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
)

// Keys of TokenReview status.user.extra for pod-bound tokens, and the group
// every service account belongs to.
const (
	extraPodName          = "authentication.kubernetes.io/pod-name"
	extraPodUID           = "authentication.kubernetes.io/pod-uid"
	serviceAccountsGroup  = "system:serviceaccounts"
	serviceAccountsPrefix = serviceAccountsGroup + ":"
)

// reviewRules is what parseTokenReview enforces: the parts of a
// TokenReviewConfig that do not need I/O.
type reviewRules struct {
	cluster      string
	audiences    []string
	allowUnbound bool
}

// parseTokenReview turns the status of a TokenReview the API server answered
// into an Identity. It is pure and every error wraps ErrUnauthenticated:
//
//   - status.authenticated must be true and status.error empty;
//   - status.audiences must intersect the accepted audiences (the API server
//     reports which of the requested audiences the token carries; a
//     response without one proves nothing about ours);
//   - the username must be system:serviceaccount:<ns>:<sa> with both parts
//     DNS-1123 labels, and the groups must include system:serviceaccounts;
//   - a pod-bound token carries exactly one pod name (a DNS-1123 subdomain)
//     and one pod UID in status.user.extra; unless r.allowUnbound, a token
//     without them is rejected.
func parseTokenReview(st *authnv1.TokenReviewStatus, r *reviewRules) (Identity, error) {
	if !st.Authenticated {
		reason := st.Error
		if reason == "" {
			reason = "not authenticated"
		}
		return Identity{}, fmt.Errorf("%w: token review: %s", ErrUnauthenticated, clip(reason))
	}
	if st.Error != "" {
		return Identity{}, fmt.Errorf("%w: token review authenticated with error %q", ErrUnauthenticated, clip(st.Error))
	}
	if !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(r.audiences, a) }) {
		return Identity{}, because(ErrAudience, fmt.Errorf("%w: token review audiences %q do not include an accepted audience",
			ErrUnauthenticated, clip(strings.Join(st.Audiences, ","))))
	}
	u := &st.User
	ns, sa, ok := parseSubject(u.Username)
	switch {
	case !ok:
		return Identity{}, fmt.Errorf("%w: user %q is not a service account", ErrUnauthenticated, clip(u.Username))
	case !isDNS1123Label(ns):
		return Identity{}, fmt.Errorf("%w: invalid namespace %q", ErrUnauthenticated, clip(ns))
	case !isDNS1123Label(sa):
		return Identity{}, fmt.Errorf("%w: invalid service account name %q", ErrUnauthenticated, clip(sa))
	case !slices.Contains(u.Groups, serviceAccountsGroup):
		return Identity{}, fmt.Errorf("%w: user %q is not in group %s", ErrUnauthenticated, clip(u.Username), serviceAccountsGroup)
	}
	id := Identity{Cluster: r.cluster, Namespace: ns, ServiceAccount: sa}
	podName, hasName := u.Extra[extraPodName]
	podUID, hasUID := u.Extra[extraPodUID]
	switch {
	case !hasName && !hasUID:
		if !r.allowUnbound {
			return Identity{}, fmt.Errorf("%w: token of %s/%s is not bound to a pod", ErrUnauthenticated, ns, sa)
		}
		return id, nil
	case len(podName) != 1 || len(podUID) != 1 || podUID[0] == "" || !isDNS1123Subdomain(podName[0]):
		return Identity{}, fmt.Errorf("%w: token of %s/%s has an invalid pod binding %q/%q",
			ErrUnauthenticated, ns, sa, clip(strings.Join(podName, ",")), clip(strings.Join(podUID, ",")))
	}
	id.PodName, id.PodUID = podName[0], podUID[0]
	return id, nil
}

// checkPod verifies that pod is the live pod a token was bound to: same
// namespace, name and UID (a pod recreated under the same name has a new
// UID), running as the token's service account, and not being deleted. It
// is pure; every error wraps ErrUnauthenticated.
func checkPod(pod *corev1.Pod, id *Identity) error {
	switch {
	case pod.Namespace != id.Namespace || pod.Name != id.PodName:
		return fmt.Errorf("%w: fetched pod %s/%s, token is bound to %s/%s",
			ErrUnauthenticated, pod.Namespace, pod.Name, id.Namespace, id.PodName)
	case string(pod.UID) != id.PodUID:
		return fmt.Errorf("%w: pod %s/%s has uid %s, token is bound to uid %s",
			ErrUnauthenticated, id.Namespace, id.PodName, pod.UID, clip(id.PodUID))
	case pod.DeletionTimestamp != nil:
		return fmt.Errorf("%w: pod %s/%s is terminating", ErrUnauthenticated, id.Namespace, id.PodName)
	case pod.Spec.ServiceAccountName != id.ServiceAccount:
		return fmt.Errorf("%w: pod %s/%s runs as service account %q, token is for %q",
			ErrUnauthenticated, id.Namespace, id.PodName, pod.Spec.ServiceAccountName, id.ServiceAccount)
	}
	return nil
}

// unverifiedExpiry returns the "exp" claim of a compact JWT without
// verifying anything, or the zero time if there is none. It is only called
// after the API server has authenticated this very token, so the claim is
// the one the API server signed; it is used for nothing but to bound how
// long a positive result may be cached (TokenReview does not report it).
func unverifiedExpiry(token string) time.Time {
	parts := strings.SplitN(token, ".", 4)
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return time.Time{}
	}
	secs, err := c.Exp.Float64()
	if err != nil || secs <= 0 || secs > 1<<40 {
		return time.Time{}
	}
	return time.Unix(int64(secs), 0).UTC()
}
