package manager

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"teledock.dev/teledock/agent/agentconfig"
	managerv1 "teledock.dev/teledock/api/manager/v1"
)

// podNameKey is where a pod-bound ServiceAccount token's review names its pod.
const podNameKey = "authentication.kubernetes.io/pod-name"

// authenticateAgent checks that an arriving agent runs in the pod it names: its token, which the
// kubelet projected into the agent's container, must be a ServiceAccount token meant for the
// manager and bound to that pod. Otherwise any pod could pose as an intercepted pod's agent and
// receive the developer's --to-pod connections or inject connections into their handler.
func (m *Manager) authenticateAgent(ctx context.Context, info *managerv1.AgentInfo) error {
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	token, ok := "", len(auth) == 1
	if ok {
		token, ok = strings.CutPrefix(auth[0], "Bearer ")
	}
	if !ok || token == "" || !jwtShaped(token) {
		return status.Errorf(codes.Unauthenticated,
			"traffic-agent of pod %s/%s showed no token: the pod predates this traffic-manager's injector; restart it",
			info.GetNamespace(), info.GetPodName())
	}
	review, err := m.k8s.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{agentconfig.TokenAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return grpcError(fmt.Errorf("review the agent's token: %w", err))
	}
	st := review.Status
	if !st.Authenticated || !slices.Contains(st.Audiences, agentconfig.TokenAudience) {
		return status.Errorf(codes.Unauthenticated, "traffic-agent of pod %s/%s: token refused: %s",
			info.GetNamespace(), info.GetPodName(), st.Error)
	}
	// system:serviceaccount:NAMESPACE:NAME, with the pod in the extra fields.
	parts := strings.Split(st.User.Username, ":")
	pods := st.User.Extra[podNameKey]
	if len(parts) != 4 || parts[0] != "system" || parts[1] != "serviceaccount" || parts[2] != info.GetNamespace() ||
		len(pods) != 1 || pods[0] != info.GetPodName() {
		return status.Errorf(codes.PermissionDenied, "traffic-agent claims pod %s/%s but its token is %s's (pod %v)",
			info.GetNamespace(), info.GetPodName(), st.User.Username, pods)
	}
	return nil
}

// jwtShaped rejects, before any API call, what cannot be a ServiceAccount token, so that a pod
// sending junk does not spend the manager's API budget on TokenReviews.
func jwtShaped(token string) bool {
	return len(token) <= 16<<10 && strings.Count(token, ".") == 2
}
