package install

// EventKind says what an Event reports.
type EventKind string

const (
	EventNamespaceCreated EventKind = "namespace-created" // Install created the namespace
	EventInstalling       EventKind = "installing"        // first install of the release
	EventUpgrading        EventKind = "upgrading"         // the release exists and is upgraded
	EventApplied          EventKind = "applied"           // the manifests are applied (Revision set)
	EventWaiting          EventKind = "waiting"           // Ready of Desired pods are ready; Reason says what blocks
	EventReady            EventKind = "ready"             // the traffic-manager is ready
	EventUninstalling     EventKind = "uninstalling"
	EventUninstalled      EventKind = "uninstalled"
	EventNamespaceDeleted EventKind = "namespace-deleted" // Uninstall deleted the namespace Install created
	EventAgentRemoved     EventKind = "agent-removed"     // RemoveAgents restored Workload in Namespace
)

// Event is a step of Install, Uninstall or RemoveAgents, for the CLI to render. The package never prints.
type Event struct {
	Kind      EventKind
	Namespace string
	Release   string
	Revision  int    // EventApplied: the release's revision
	Ready     int32  // EventWaiting, EventReady
	Desired   int32  // EventWaiting, EventReady
	Reason    string // EventWaiting: why pods are not ready yet, from their status; may be empty
	Workload  string // EventAgentRemoved: "Kind/name"
}

// EventFunc receives progress events, synchronously, from the goroutine running Install,
// Uninstall or RemoveAgents.
type EventFunc func(Event)
