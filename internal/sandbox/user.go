package sandbox

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// execUser is the identity a sandboxed process runs as.
type execUser struct {
	UID, GID int
	Groups   []int // supplementary groups, primary group first
	Home     string
}

// passwdEntry is one line of /etc/passwd.
type passwdEntry struct {
	Name     string
	UID, GID int
	Home     string
}

// groupEntry is one line of /etc/group.
type groupEntry struct {
	Name    string
	GID     int
	Members []string
}

// resolveUser resolves a Dockerfile USER value ("", "name", "uid", "name:group",
// "uid:gid") against the rootfs's passwd and group files, like Docker: a name
// must exist, a number need not; without a group the user's primary group is
// used (0 for an unknown uid); supplementary groups are the groups of
// /etc/group that list the user's name.
func resolveUser(spec string, passwd []passwdEntry, groups []groupEntry) (execUser, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" {
		userPart = "0"
	}
	u := execUser{Home: "/"}
	var entry *passwdEntry
	for i := range passwd {
		if passwd[i].Name == userPart {
			entry = &passwd[i]
			break
		}
	}
	uid, numErr := strconv.Atoi(userPart)
	if entry == nil && numErr == nil {
		for i := range passwd {
			if passwd[i].UID == uid {
				entry = &passwd[i]
				break
			}
		}
	}
	switch {
	case entry != nil:
		u.UID, u.GID, u.Home = entry.UID, entry.GID, entry.Home
	case numErr == nil && uid >= 0:
		u.UID = uid
	default:
		return execUser{}, fmt.Errorf("resolving user %q: no matching entry in /etc/passwd", userPart)
	}
	if hasGroup {
		gid, err := resolveGroup(groupPart, groups)
		if err != nil {
			return execUser{}, err
		}
		u.GID = gid
	}
	u.Groups = []int{u.GID}
	if entry != nil {
		for _, g := range groups {
			for _, m := range g.Members {
				if m == entry.Name && !containsInt(u.Groups, g.GID) {
					u.Groups = append(u.Groups, g.GID)
				}
			}
		}
	}
	return u, nil
}

func resolveGroup(name string, groups []groupEntry) (int, error) {
	for _, g := range groups {
		if g.Name == name {
			return g.GID, nil
		}
	}
	if gid, err := strconv.Atoi(name); err == nil && gid >= 0 {
		return gid, nil
	}
	return 0, fmt.Errorf("resolving group %q: no matching entry in /etc/group", name)
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// parsePasswd reads /etc/passwd lines; malformed lines are skipped as libc does.
func parsePasswd(r io.Reader) ([]passwdEntry, error) {
	var out []passwdEntry
	err := eachColonLine(r, 7, func(f []string) {
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 == nil && err2 == nil {
			out = append(out, passwdEntry{Name: f[0], UID: uid, GID: gid, Home: f[5]})
		}
	})
	return out, err
}

// parseGroup reads /etc/group lines; malformed lines are skipped.
func parseGroup(r io.Reader) ([]groupEntry, error) {
	var out []groupEntry
	err := eachColonLine(r, 4, func(f []string) {
		gid, err := strconv.Atoi(f[2])
		if err != nil {
			return
		}
		g := groupEntry{Name: f[0], GID: gid}
		for _, m := range strings.Split(f[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				g.Members = append(g.Members, m)
			}
		}
		out = append(out, g)
	})
	return out, err
}

func eachColonLine(r io.Reader, fields int, fn func([]string)) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Split(line, ":"); len(f) >= fields {
			fn(f)
		}
	}
	return sc.Err()
}

// lookupUser resolves spec against /etc/passwd and /etc/group of the current
// root (the init calls it after pivot_root). Missing files count as empty.
func lookupUser(spec string) (execUser, error) {
	var passwd []passwdEntry
	var groups []groupEntry
	if f, err := os.Open("/etc/passwd"); err == nil {
		passwd, err = parsePasswd(f)
		f.Close()
		if err != nil {
			return execUser{}, fmt.Errorf("reading /etc/passwd: %w", err)
		}
	}
	if f, err := os.Open("/etc/group"); err == nil {
		groups, err = parseGroup(f)
		f.Close()
		if err != nil {
			return execUser{}, fmt.Errorf("reading /etc/group: %w", err)
		}
	}
	return resolveUser(spec, passwd, groups)
}
