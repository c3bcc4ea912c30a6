package manager

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"teledock.dev/teledock/cluster/inject"
	"teledock.dev/teledock/cluster/workload"
)

const (
	// maxPodsExplained bounds how many pods a "did not arrive" message describes (newest first).
	maxPodsExplained = 3
	// maxEvents bounds how many warning events it quotes.
	maxEvents = 4
	// maxQuote bounds a quoted message: image pull errors run to hundreds of characters.
	maxQuote = 200
	// eventSlack takes in events a little older than the request: a pod that already failed
	// to pull the agent image keeps reporting it, but its first report may predate us.
	eventSlack = time.Minute
)

// imageReasons are the waiting reasons of a container whose image cannot be had.
var imageReasons = []string{"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "ImageInspectError"}

// explainNoAgent says, as far as the pods and their events tell, why no agent running cfgJSON
// arrived. rollout and since identify the rollout of this request, so that pods from before it
// are told apart from pods it made.
func (m *Manager) explainNoAgent(ctx context.Context, wl workload.Workload, cfgJSON, rollout string, since time.Time) string {
	pods, err := workload.Pods(ctx, m.k8s, wl)
	if err != nil {
		return fmt.Sprintf("its pods cannot be read: %v", err)
	}
	var why []string
	if len(pods) == 0 {
		why = append(why, fmt.Sprintf("it has no pods (replicas: %d)", wl.Replicas))
	}
	slices.Reverse(pods) // newest first
	// Events are quoted for the pods whose status says nothing specific; the others' events
	// only repeat it.
	quiet := make(map[string]bool)
	for i, p := range pods {
		if i == maxPodsExplained {
			why = append(why, fmt.Sprintf("and %d more pods", len(pods)-i))
			break
		}
		explained, specific := m.explainPod(&p, wl, cfgJSON, rollout, since)
		why = append(why, fmt.Sprintf("pod %s: %s", p.Name, explained))
		if !specific {
			quiet[p.Name] = true
		}
	}
	if ev := m.recentWarnings(ctx, wl, quiet, since.Add(-eventSlack)); ev != "" {
		why = append(why, "events: "+ev)
	}
	return strings.Join(why, "; ")
}

// explainPod says why the pod has no connected agent running cfgJSON. specific is false when
// its status does not tell, and its events may.
func (m *Manager) explainPod(p *corev1.Pod, wl workload.Workload, cfgJSON, rollout string, since time.Time) (why string, specific bool) {
	_, pjs, err := podAgentConfig(p)
	switch {
	case errors.Is(err, errNoAgentConfig) && !inject.HasAgent(p):
		if p.Annotations[workload.AnnotationRollout] != rollout && p.CreationTimestamp.Time.Before(since.Truncate(time.Second)) {
			return "it has no traffic-agent and predates the rollout; it has not been replaced yet", true
		}
		if !m.configs.askedSince(wl.Namespace, wl.Name, since.Truncate(time.Second)) {
			return fmt.Sprintf("it was created without a traffic-agent and the agent injector was not called: check that the "+
				"MutatingWebhookConfiguration teledock-agent-injector-%s exists and that the API server reaches the "+
				"service traffic-manager.%s on port 443", m.cfg.Namespace, m.cfg.Namespace), true
		}
		return "it was created without a traffic-agent although the agent injector was called; the traffic-manager's log says why", true
	case err != nil:
		return fmt.Sprintf("its traffic-agent has a bad config: %v", err), true
	case pjs != cfgJSON:
		return "it runs an older agent config and has not been replaced yet", true
	}
	return podProblem(p, m.cfg.AgentManagerAddress)
}

// podProblem describes what keeps a pod with the right agent from having a connected agent.
func podProblem(p *corev1.Pod, managerAddr string) (why string, specific bool) {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return fmt.Sprintf("not scheduled: %s", c.Message), true
		}
	}
	for _, cs := range p.Status.InitContainerStatuses {
		if s := containerProblem(cs); s != "" {
			return fmt.Sprintf("init container %s %s", cs.Name, s), true
		}
	}
	// The agent first, then the app containers, whose failure keeps the pod from being ready.
	statuses := slices.Clone(p.Status.ContainerStatuses)
	slices.SortStableFunc(statuses, func(a, b corev1.ContainerStatus) int {
		return boolInt(b.Name == inject.AgentContainerName) - boolInt(a.Name == inject.AgentContainerName)
	})
	agentRunning := false
	for _, cs := range statuses {
		if s := containerProblem(cs); s != "" {
			return fmt.Sprintf("container %s %s", cs.Name, s), true
		}
		if cs.Name == inject.AgentContainerName && cs.State.Running != nil {
			agentRunning = true
		}
	}
	if agentRunning {
		return fmt.Sprintf("its traffic-agent runs but has not connected to the traffic-manager at %s", managerAddr), true
	}
	return fmt.Sprintf("it is %s and its traffic-agent is not running yet", p.Status.Phase), false
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// containerProblem describes a container that is stuck or failing, or returns "".
func containerProblem(cs corev1.ContainerStatus) string {
	switch {
	case cs.State.Waiting != nil:
		w := cs.State.Waiting
		switch {
		case slices.Contains(imageReasons, w.Reason):
			return fmt.Sprintf("cannot get its image %s: %s: %s", cs.Image, w.Reason, clip(w.Message))
		case w.Reason == "CrashLoopBackOff":
			if t := cs.LastTerminationState.Terminated; t != nil {
				return fmt.Sprintf("keeps crashing: exit code %d %s", t.ExitCode, clip(strings.TrimSpace(t.Reason+" "+t.Message)))
			}
			return "keeps crashing"
		case w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing":
			return fmt.Sprintf("is waiting: %s: %s", w.Reason, clip(w.Message))
		}
	case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
		t := cs.State.Terminated
		return fmt.Sprintf("failed: exit code %d %s", t.ExitCode, clip(strings.TrimSpace(t.Reason+" "+t.Message)))
	}
	return ""
}

// recentWarnings quotes the newest warning events since t of the pods, the workload, and (for a
// Deployment) its ReplicaSets, which report pods they could not create.
func (m *Manager) recentWarnings(ctx context.Context, wl workload.Workload, pods map[string]bool, t time.Time) string {
	evs, err := m.k8s.CoreV1().Events(wl.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return ""
	}
	about := func(o corev1.ObjectReference) bool {
		switch o.Kind {
		case "Pod":
			return pods[o.Name]
		case wl.Kind:
			return o.Name == wl.Name
		case workload.KindReplicaSet:
			return wl.Kind == workload.KindDeployment && strings.HasPrefix(o.Name, wl.Name+"-")
		}
		return false
	}
	var picked []corev1.Event
	for _, e := range evs.Items {
		if e.Type == corev1.EventTypeWarning && about(e.InvolvedObject) && !eventTime(e).Before(t) {
			picked = append(picked, e)
		}
	}
	slices.SortFunc(picked, func(a, b corev1.Event) int { return eventTime(b).Compare(eventTime(a)) })
	var out []string
	for _, e := range picked {
		s := fmt.Sprintf("%s %s: %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, clip(strings.TrimSpace(e.Message)))
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
		if len(out) == maxEvents {
			break
		}
	}
	return strings.Join(out, "; ")
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.FirstTimestamp.Time
}

// clip shortens a quoted message to maxQuote bytes.
func clip(s string) string {
	if len(s) <= maxQuote {
		return s
	}
	return strings.ToValidUTF8(s[:maxQuote], "") + "..."
}
