package redirect

import (
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"runtime"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// netns is a fresh network namespace held by one locked OS thread; do runs functions on that
// thread, so that sockets they open live in the namespace.
type netns struct {
	fd   int
	work chan func()
}

func (n *netns) do(f func()) {
	done := make(chan struct{})
	n.work <- func() { defer close(done); f() }
	<-done
}

// newNetNS makes a network namespace with lo up, or skips the test when this process may not
// (it needs root with CAP_SYS_ADMIN for unshare and CAP_NET_ADMIN for nftables).
func newNetNS(tb testing.TB) *netns {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to unshare a network namespace")
	}
	n := &netns{work: make(chan func())}
	ready := make(chan error)
	go func() {
		// The thread is never unlocked: when this goroutine returns, the runtime ends the
		// thread, and the namespace with it, instead of reusing a thread in the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			n.fd = fd
			err = loUp()
		}
		ready <- err
		for f := range n.work {
			f()
		}
	}()
	if err := <-ready; err != nil {
		if errors.Is(err, unix.EPERM) {
			tb.Skipf("cannot make a network namespace: %v", err)
		}
		tb.Fatalf("network namespace: %v", err)
	}
	tb.Cleanup(func() {
		close(n.work)
		unix.Close(n.fd)
	})
	return n
}

// loUp sets the loopback interface of the calling thread's namespace up.
func loUp() error {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr)
}

func TestInstall(t *testing.T) {
	ns := newNetNS(t)
	conn, err := nftables.New(nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}

	for _, step := range []struct {
		name  string
		rules []Redirect
	}{
		{"first install", []Redirect{{"tcp", 8080, 9900}, {"udp", 5353, 9901}}},
		{"again, same rules", []Redirect{{"tcp", 8080, 9900}, {"udp", 5353, 9901}}},
		{"again, other rules replace them", []Redirect{{"tcp", 80, 9902}}},
		{"no rules leaves an empty table", nil},
	} {
		t.Run(step.name, func(t *testing.T) {
			var installErr error
			ns.do(func() { installErr = Install(step.rules) })
			if installErr != nil {
				t.Fatalf("Install: %v", installErr)
			}
			got, err := installed(conn)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, step.rules) {
				t.Errorf("installed %v, want %v", got, step.rules)
			}
			tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
			if err != nil {
				t.Fatal(err)
			}
			if len(tables) != 1 || tables[0].Name != TableName {
				t.Errorf("tables %v, want only %s", tables, TableName)
			}
			chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
			if err != nil {
				t.Fatal(err)
			}
			if len(chains) != 1 || chains[0].Type != nftables.ChainTypeNAT || *chains[0].Hooknum != *nftables.ChainHookPrerouting ||
				*chains[0].Priority != *nftables.ChainPriorityNATDest {
				t.Errorf("chains %+v", chains)
			}
		})
	}

	t.Run("Installed reads the calling thread's namespace", func(t *testing.T) {
		want := []Redirect{{"tcp", 8080, 9900}}
		var got []Redirect
		var err error
		ns.do(func() {
			if err = Install(want); err == nil {
				got, err = Installed()
			}
		})
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Installed = %v, %v; want %v", got, err, want)
		}
	})

	t.Run("invalid rules are refused before touching the namespace", func(t *testing.T) {
		var err error
		ns.do(func() { err = Install([]Redirect{{"tcp", 80, 80}}) })
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
		got, _ := installed(conn)
		if !reflect.DeepEqual(got, []Redirect{{"tcp", 8080, 9900}}) {
			t.Errorf("rules changed to %v", got)
		}
	})
}

// The agent reaches the app at 127.0.0.1:APP_PORT with the redirect in place: traffic the pod
// makes itself is not redirected.
func TestLocalTrafficIsNotRedirected(t *testing.T) {
	ns := newNetNS(t)
	var err error
	ns.do(func() { err = Install([]Redirect{{"tcp", 18080, 19900}}) })
	if err != nil {
		t.Fatal(err)
	}
	var app, agent net.Listener
	ns.do(func() {
		if app, err = net.Listen("tcp", "127.0.0.1:18080"); err != nil {
			return
		}
		agent, err = net.Listen("tcp", "127.0.0.1:19900")
	})
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	defer agent.Close()
	serve := func(l net.Listener, name string) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, name)
			c.Close()
		}
	}
	go serve(app, "app")
	go serve(agent, "agent")

	var got []byte
	ns.do(func() {
		var c net.Conn
		if c, err = net.Dial("tcp", "127.0.0.1:18080"); err != nil {
			return
		}
		defer c.Close()
		got, err = io.ReadAll(c)
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "app" {
		t.Errorf("local connection to the app port reached %q, want the app", got)
	}
}
