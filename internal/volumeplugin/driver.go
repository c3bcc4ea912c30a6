// Package volumeplugin is teledock's Docker volume plugin (docker.volumedriver/1.0): each volume is
// one mount of an intercepted container, reached through a connection's daemon, and mounted as a
// FUSE filesystem under the plugin's propagated mount while containers use it.
package volumeplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
)

// The options of `docker volume create -d teledock/volumes:V -o KEY=VALUE`.
const (
	OptDaemon    = "daemon"    // host:port of the connection's daemon API, as the plugin reaches it
	OptToken     = "token"     // the connection's API token
	OptIntercept = "intercept" // the intercept's name
	OptPath      = "path"      // the mount's path in the agent's SFTP tree (/CONTAINER/PATH)
	OptReadOnly  = "readonly"  // "true" for a mount the pod has read-only
)

// Volume is what Create was given.
type Volume struct {
	Daemon, Token, Intercept, Path string
	ReadOnly                       bool
}

// Mounter mounts a volume's remote folder at dir; the returned func unmounts it.
type Mounter func(dir string, v Volume) (unmount func() error, err error)

// Config describes the driver.
type Config struct {
	MountDir  string // where volumes are mounted: the plugin's propagated mount
	StateFile string // where the volumes are kept across plugin restarts; empty: not kept
	Mount     Mounter
}

// Driver answers Docker's volume plugin protocol.
type Driver struct {
	cfg Config
	log *slog.Logger

	mu   sync.Mutex
	vols map[string]*volume
}

type volume struct {
	Volume
	users   map[string]bool // mount IDs of the containers using it
	unmount func() error
}

// New loads the state file, if any.
func New(cfg Config, log *slog.Logger) (*Driver, error) {
	if cfg.MountDir == "" || cfg.Mount == nil || log == nil {
		return nil, errors.New("volumeplugin: MountDir, Mount and a logger are required")
	}
	d := &Driver{cfg: cfg, log: log, vols: map[string]*volume{}}
	if cfg.StateFile != "" {
		b, err := os.ReadFile(cfg.StateFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("volumeplugin: state: %w", err)
		default:
			var saved map[string]Volume
			if err := json.Unmarshal(b, &saved); err != nil {
				log.Warn("state file unreadable; starting empty", "err", err)
			}
			for name, v := range saved {
				d.vols[name] = &volume{Volume: v, users: map[string]bool{}}
			}
		}
	}
	return d, nil
}

// Close unmounts every volume still mounted.
func (d *Driver) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, v := range d.vols {
		if v.unmount != nil {
			if err := v.unmount(); err != nil {
				d.log.Warn("unmount", "volume", name, "err", err)
			}
			v.unmount = nil
		}
	}
}

// Handler serves the protocol; Docker talks to it over the plugin's unix socket.
func (d *Driver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]any{"Implements": []string{"VolumeDriver"}})
	})
	mux.HandleFunc("POST /VolumeDriver.Capabilities", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, map[string]any{"Capabilities": map[string]string{"Scope": "local"}})
	})
	handle := func(name string, f func(req request) (map[string]any, error)) {
		mux.HandleFunc("POST /VolumeDriver."+name, func(w http.ResponseWriter, r *http.Request) {
			var req request
			if r.ContentLength != 0 {
				if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
					reply(w, map[string]any{"Err": "bad request: " + err.Error()})
					return
				}
			}
			resp, err := f(req)
			if err != nil {
				d.log.Info("volume request failed", "op", name, "volume", req.Name, "err", err)
				resp = map[string]any{"Err": err.Error()}
			}
			reply(w, resp)
		})
	}
	handle("Create", d.create)
	handle("Remove", d.remove)
	handle("Mount", d.mount)
	handle("Unmount", d.unmountReq)
	handle("Path", d.path)
	handle("Get", d.get)
	handle("List", d.list)
	return mux
}

type request struct {
	Name string
	ID   string
	Opts map[string]string
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/vnd.docker.plugins.v1.2+json")
	_ = json.NewEncoder(w).Encode(v)
}

// validName keeps volume names usable as folder names under MountDir.
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

func (d *Driver) create(req request) (map[string]any, error) {
	if !validName.MatchString(req.Name) {
		return nil, fmt.Errorf("volume name %q: use letters, digits, '_', '.', '-'", req.Name)
	}
	v := Volume{
		Daemon:    req.Opts[OptDaemon],
		Token:     req.Opts[OptToken],
		Intercept: req.Opts[OptIntercept],
		Path:      req.Opts[OptPath],
	}
	for k := range req.Opts {
		switch k {
		case OptDaemon, OptToken, OptIntercept, OptPath, OptReadOnly:
		default:
			return nil, fmt.Errorf("unknown option %q (teledock creates these volumes; see `teledock intercept --mount`)", k)
		}
	}
	if ro := req.Opts[OptReadOnly]; ro != "" {
		b, err := strconv.ParseBool(ro)
		if err != nil {
			return nil, fmt.Errorf("option readonly=%q: want true or false", ro)
		}
		v.ReadOnly = b
	}
	if v.Daemon == "" || v.Token == "" || v.Intercept == "" || !filepath.IsAbs(v.Path) {
		return nil, fmt.Errorf("options %s, %s, %s and an absolute %s are required", OptDaemon, OptToken, OptIntercept, OptPath)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if old, ok := d.vols[req.Name]; ok {
		if old.Volume == v {
			return map[string]any{}, nil
		}
		return nil, fmt.Errorf("volume %s exists with other options", req.Name)
	}
	d.vols[req.Name] = &volume{Volume: v, users: map[string]bool{}}
	return map[string]any{}, d.save()
}

func (d *Driver) remove(req request) (map[string]any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
		return map[string]any{}, nil // already gone: Docker may retry after a plugin restart
	}
	if len(v.users) > 0 {
		return nil, fmt.Errorf("volume %s is in use by %d container(s)", req.Name, len(v.users))
	}
	delete(d.vols, req.Name)
	_ = os.Remove(d.dir(req.Name))
	return map[string]any{}, d.save()
}

func (d *Driver) dir(name string) string { return filepath.Join(d.cfg.MountDir, name) }

func (d *Driver) mount(req request) (map[string]any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
		return nil, fmt.Errorf("no volume %s", req.Name)
	}
	dir := d.dir(req.Name)
	if v.unmount == nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		unmount, err := d.cfg.Mount(dir, v.Volume)
		if err != nil {
			return nil, fmt.Errorf("mount the volumes of intercept %s: %w", v.Intercept, err)
		}
		v.unmount = unmount
		d.log.Info("mounted", "volume", req.Name, "intercept", v.Intercept, "path", v.Path)
	}
	v.users[req.ID] = true
	return map[string]any{"Mountpoint": dir}, nil
}

func (d *Driver) unmountReq(req request) (map[string]any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
		return nil, fmt.Errorf("no volume %s", req.Name)
	}
	delete(v.users, req.ID)
	if len(v.users) == 0 && v.unmount != nil {
		err := v.unmount()
		v.unmount = nil
		if err != nil {
			return nil, err
		}
		d.log.Info("unmounted", "volume", req.Name)
	}
	return map[string]any{}, nil
}

func (d *Driver) path(req request) (map[string]any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
		return nil, fmt.Errorf("no volume %s", req.Name)
	}
	return map[string]any{"Mountpoint": d.mountpoint(req.Name, v)}, nil
}

// mountpoint is reported only while mounted, as the protocol asks.
func (d *Driver) mountpoint(name string, v *volume) string {
	if v.unmount == nil {
		return ""
	}
	return d.dir(name)
}

func (d *Driver) get(req request) (map[string]any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.vols[req.Name]
	if !ok {
		return nil, fmt.Errorf("no volume %s", req.Name)
	}
	return map[string]any{"Volume": d.info(req.Name, v)}, nil
}

func (d *Driver) info(name string, v *volume) map[string]any {
	return map[string]any{
		"Name":       name,
		"Mountpoint": d.mountpoint(name, v),
		"Status":     map[string]any{"intercept": v.Intercept, "path": v.Path, "readonly": v.ReadOnly, "containers": len(v.users)},
	}
}

func (d *Driver) list(request) (map[string]any, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := make([]string, 0, len(d.vols))
	for name := range d.vols {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make([]map[string]any, 0, len(names))
	for _, name := range names {
		out = append(out, d.info(name, d.vols[name]))
	}
	return map[string]any{"Volumes": out}, nil
}

// save writes the volumes (not their mounts) to the state file; the caller holds mu.
func (d *Driver) save() error {
	if d.cfg.StateFile == "" {
		return nil
	}
	saved := map[string]Volume{}
	for name, v := range d.vols {
		saved[name] = v.Volume
	}
	b, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	tmp := d.cfg.StateFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return os.Rename(tmp, d.cfg.StateFile)
}
