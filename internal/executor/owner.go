package executor

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/kiln-build/kiln/internal/rootpath"
)

// ResolveOwner turns a --chown value ("user", "uid", "user:group", "uid:gid") into numeric ids,
// looking names up in the rootfs's /etc/passwd and /etc/group as Docker does. A user given
// without a group gets the group of the same id when the user is numeric, else the user's
// primary group.
func ResolveOwner(rootfs, spec string) (Owner, error) {
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	var o Owner
	var primary int
	if id, err := strconv.Atoi(userPart); err == nil {
		o.UID, primary = id, id
	} else {
		entry, err := lookup(rootfs, "/etc/passwd", userPart)
		if err != nil {
			return Owner{}, fmt.Errorf("--chown=%s: %w", spec, err)
		}
		if o.UID, err = strconv.Atoi(entry[2]); err != nil {
			return Owner{}, fmt.Errorf("--chown=%s: bad uid in /etc/passwd: %q", spec, entry[2])
		}
		if len(entry) > 3 {
			primary, _ = strconv.Atoi(entry[3])
		}
	}
	if !hasGroup {
		o.GID = primary
		return o, nil
	}
	if id, err := strconv.Atoi(groupPart); err == nil {
		o.GID = id
		return o, nil
	}
	entry, err := lookup(rootfs, "/etc/group", groupPart)
	if err != nil {
		return Owner{}, fmt.Errorf("--chown=%s: %w", spec, err)
	}
	if o.GID, err = strconv.Atoi(entry[2]); err != nil {
		return Owner{}, fmt.Errorf("--chown=%s: bad gid in /etc/group: %q", spec, entry[2])
	}
	return o, nil
}

// lookup finds the colon-separated entry named name in a passwd-style file of the rootfs.
func lookup(rootfs, file, name string) ([]string, error) {
	p, err := rootpath.Resolve(rootfs, file, true)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("looking up %q: cannot read %s in the image: %w", name, file, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		if len(fields) >= 3 && fields[0] == name {
			return fields, nil
		}
	}
	return nil, fmt.Errorf("no %q in %s of the image", name, file)
}
