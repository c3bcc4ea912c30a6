package dns

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"strings"
	"time"
)

// ReadResolvConf returns the nameserver addresses (IPs, without port) and the search domains of a
// resolv.conf. As in glibc, the last "search" or "domain" line sets the search list.
func ReadResolvConf(path string) (nameservers, search []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read resolv.conf: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if len(fields) > 1 {
				nameservers = append(nameservers, fields[1])
			}
		case "search":
			search = append([]string(nil), fields[1:]...)
		case "domain":
			search = append([]string(nil), fields[1:min(2, len(fields))]...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read resolv.conf %s: %w", path, err)
	}
	return nameservers, search, nil
}

// WriteResolvConf makes path point the stub resolver at nameserver (an IP address: resolv.conf
// has no port syntax) with the given search list, ndots and per-try timeout (rounded up to whole
// seconds; zero leaves the resolver's default).
//
// It rewrites the file in place, truncating and writing the same inode, instead of writing a new
// file and renaming it: Docker bind-mounts /etc/resolv.conf into the container, so a rename
// fails (EBUSY), and containers that join the namespace see the same file only through that
// mount.
func WriteResolvConf(path string, nameserver string, search []string, ndots int, timeout time.Duration) error {
	if _, err := netip.ParseAddr(nameserver); err != nil {
		return fmt.Errorf("write resolv.conf: nameserver: %w", err)
	}
	if ndots < 0 {
		return errors.New("write resolv.conf: negative ndots")
	}
	var b bytes.Buffer
	b.WriteString("# Written by teledock: cluster names resolve in the cluster, others as before.\n")
	fmt.Fprintf(&b, "nameserver %s\n", nameserver)
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	fmt.Fprintf(&b, "options ndots:%d", ndots)
	if timeout > 0 {
		fmt.Fprintf(&b, " timeout:%d", int(math.Ceil(timeout.Seconds())))
	}
	b.WriteString("\n")

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("write resolv.conf %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write resolv.conf %s: %w", path, err)
	}
	return nil
}
