package sandbox

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
)

// Mapping modes, best first.
const (
	// ModeFull maps every id the current process owns, identity. Used when kiln
	// runs as uid 0 (on a host, or inside a pod's user namespace).
	ModeFull = "full"
	// ModeSubuid maps the caller's own id to 0 and its /etc/subuid and
	// /etc/subgid ranges to 1..N, written by newuidmap and newgidmap.
	ModeSubuid = "subuid"
	// ModeSingle maps only the caller's own uid and gid to 0.
	ModeSingle = "single"
)

// minFullRange is the number of ids a full mapping should at least have: what a
// Kubernetes pod with hostUsers: false gets.
const minFullRange = 65536

// IDRange maps Size consecutive ids starting at ContainerID inside the user
// namespace to ids starting at HostID in the parent namespace.
type IDRange struct {
	ContainerID int `json:"container"`
	HostID      int `json:"host"`
	Size        int `json:"size"`
}

// Mapping is the id mapping of kiln's user namespace.
type Mapping struct {
	Mode string    `json:"mode"` // ModeFull, ModeSubuid or ModeSingle
	UIDs []IDRange `json:"uids"` // container → host
	GIDs []IDRange `json:"gids"` // container → host
}

// Size returns the number of uids mapped (1 in single mode).
func (m Mapping) Size() int {
	n := 0
	for _, r := range m.UIDs {
		n += r.Size
	}
	return n
}

// parseIDMap parses the format of /proc/PID/uid_map: "inside outside count" lines.
func parseIDMap(r io.Reader) ([]IDRange, error) {
	var ranges []IDRange
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("id map line %q: want 3 fields", sc.Text())
		}
		var v [3]int
		for i := range f {
			n, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("id map line %q: %w", sc.Text(), err)
			}
			v[i] = int(n)
		}
		ranges = append(ranges, IDRange{ContainerID: v[0], HostID: v[1], Size: v[2]})
	}
	return ranges, sc.Err()
}

func readIDMap(path string) ([]IDRange, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ranges, err := parseIDMap(f)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return ranges, nil
}

// identityOf maps every id that is mapped in the current namespace onto itself
// in a child namespace.
func identityOf(ranges []IDRange) []IDRange {
	out := make([]IDRange, 0, len(ranges))
	for _, r := range ranges {
		out = append(out, IDRange{ContainerID: r.ContainerID, HostID: r.ContainerID, Size: r.Size})
	}
	return out
}

// subIDRange is one line of /etc/subuid or /etc/subgid.
type subIDRange struct {
	Start, Count int
}

// parseSubIDs returns the ranges in an /etc/subuid-format file that belong to
// the user with the given name or numeric id.
func parseSubIDs(r io.Reader, name string, id int) ([]subIDRange, error) {
	var out []subIDRange
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 || (f[0] != name && f[0] != strconv.Itoa(id)) {
			continue
		}
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || count == 0 {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		out = append(out, subIDRange{Start: int(start), Count: int(count)})
	}
	return out, sc.Err()
}

func readSubIDs(path, name string, id int) ([]subIDRange, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ranges, err := parseSubIDs(f, name, id)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return ranges, nil
}

// subordinateMapping maps own → 0 and the subordinate ranges to 1..N.
func subordinateMapping(own int, subs []subIDRange) []IDRange {
	out := []IDRange{{ContainerID: 0, HostID: own, Size: 1}}
	next := 1
	for _, s := range subs {
		out = append(out, IDRange{ContainerID: next, HostID: s.Start, Size: s.Count})
		next += s.Count
	}
	return out
}

// plan is a chosen mapping and the reason it was chosen.
type plan struct {
	Mapping Mapping
	Why     string
}

// choosePlan picks the best mapping available to the current process.
func choosePlan() (plan, error) {
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 && hasSetIDCaps() {
		uids, err := readIDMap("/proc/self/uid_map")
		if err != nil {
			return plan{}, fmt.Errorf("choosing id mapping: %w", err)
		}
		gids, err := readIDMap("/proc/self/gid_map")
		if err != nil {
			return plan{}, fmt.Errorf("choosing id mapping: %w", err)
		}
		m := Mapping{Mode: ModeFull, UIDs: identityOf(uids), GIDs: identityOf(gids)}
		why := fmt.Sprintf("running as uid 0: mapping all %d ids this process owns", m.Size())
		if m.Size() < minFullRange {
			why += fmt.Sprintf(" (fewer than %d: images with high ids will fail)", minFullRange)
		}
		return plan{Mapping: m, Why: why}, nil
	}
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	subu, erru := readSubIDs("/etc/subuid", name, uid)
	subg, errg := readSubIDs("/etc/subgid", name, uid)
	if erru == nil && errg == nil && len(subu) > 0 && len(subg) > 0 {
		m := Mapping{Mode: ModeSubuid, UIDs: subordinateMapping(uid, subu), GIDs: subordinateMapping(gid, subg)}
		return plan{Mapping: m, Why: fmt.Sprintf("uid %d (%s) has /etc/subuid and /etc/subgid ranges: mapping %d ids with newuidmap/newgidmap", uid, name, m.Size())}, nil
	}
	m := Mapping{
		Mode: ModeSingle,
		UIDs: []IDRange{{ContainerID: 0, HostID: uid, Size: 1}},
		GIDs: []IDRange{{ContainerID: 0, HostID: gid, Size: 1}},
	}
	why := fmt.Sprintf("uid %d (%s) is not root and has no /etc/subuid and /etc/subgid ranges: mapping only itself to 0", uid, name)
	if uid == 0 {
		why = "uid 0 without CAP_SETUID and CAP_SETGID: mapping only itself to 0"
	}
	if err := firstErr(erru, errg); err != nil {
		why += " (" + err.Error() + ")"
	}
	return plan{Mapping: m, Why: why}, nil
}

// singleRemedy tells how to get more than a single id mapped.
func singleRemedy() string {
	if os.Getuid() == 0 {
		return "give kiln CAP_SETUID and CAP_SETGID (in a pod: do not drop SETUID and SETGID in securityContext.capabilities)"
	}
	if inChildUserNamespace() {
		// newuidmap cannot help inside a container (no_new_privs, no setuid binaries): the
		// container's own ids are reachable only from its uid 0.
		return "this process is already in a user namespace (a container or a hostUsers: false pod): run kiln there as uid 0 " +
			"(runAsUser: 0 with hostUsers: false is an unprivileged id on the node), and kiln maps all the ids the pod owns"
	}
	return subuidRemedy(currentUserName())
}

// inChildUserNamespace reports whether this process runs in a user namespace other than the
// initial one, whose uid_map is the identity over every id.
func inChildUserNamespace() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return !(len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295")
}

// subuidRemedy tells a user how to get subordinate ranges.
func subuidRemedy(name string) string {
	return fmt.Sprintf("as root run: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s "+
		"(or add \"%s:100000:65536\" to /etc/subuid and /etc/subgid), and install the uidmap package", name, name)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// hasSetIDCaps reports whether the process has CAP_SETUID and CAP_SETGID in its
// effective set, which writing a mapping of more than its own id requires.
func hasSetIDCaps() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			const setgid, setuid = 1 << 6, 1 << 7
			return err == nil && caps&setuid != 0 && caps&setgid != 0
		}
	}
	return false
}
