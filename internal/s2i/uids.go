package s2i

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultAssembleUser runs assemble when the builder image names no user at all (no
// io.openshift.s2i.assemble-user label, no USER): a builder must ask for root explicitly.
// 1001 is the uid OpenShift's builder images use.
const DefaultAssembleUser = "1001"

// UIDRange is an inclusive range of user ids.
type UIDRange struct{ Min, Max uint32 }

// UIDRanges are the uids --allowed-uids permits; nil permits any user.
type UIDRanges []UIDRange

// ParseUIDRanges reads --allowed-uids: comma-separated ranges, each "N", "MIN-MAX" or
// "MIN-" (open-ended), as s2i writes them ("1-" allows every uid but root's).
func ParseUIDRanges(s string) (UIDRanges, error) {
	var out UIDRanges
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		min, err := strconv.ParseUint(lo, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--allowed-uids %q: %q is not a uid or a range MIN-MAX or MIN-", s, part)
		}
		r := UIDRange{Min: uint32(min), Max: uint32(min)}
		if isRange {
			r.Max = 1<<32 - 1
			if hi != "" {
				max, err := strconv.ParseUint(hi, 10, 32)
				if err != nil || max < min {
					return nil, fmt.Errorf("--allowed-uids %q: %q is not a range MIN-MAX with MIN <= MAX", s, part)
				}
				r.Max = uint32(max)
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func (rs UIDRanges) String() string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		switch {
		case r.Min == r.Max:
			parts[i] = fmt.Sprint(r.Min)
		case r.Max == 1<<32-1:
			parts[i] = fmt.Sprintf("%d-", r.Min)
		default:
			parts[i] = fmt.Sprintf("%d-%d", r.Min, r.Max)
		}
	}
	return strings.Join(parts, ",")
}

func (rs UIDRanges) contains(uid uint32) bool {
	for _, r := range rs {
		if uid >= r.Min && uid <= r.Max {
			return true
		}
	}
	return false
}

// checkAllowed refuses user (USER syntax: "" for root, NAME or UID, then optionally :GROUP)
// unless rs is nil or it is a numeric uid in rs. A name is refused as s2i refuses it: what it
// maps to is up to the image's /etc/passwd, which could say 0. what names the user for the
// error ("the assemble user of builder image X").
func (rs UIDRanges) checkAllowed(what, user string) error {
	if rs == nil {
		return nil
	}
	name, _, _ := strings.Cut(user, ":")
	if isRoot(name) { // "", "root" and "0" are uid 0 in every image
		name = "0"
	}
	uid, err := strconv.ParseUint(name, 10, 32)
	if err != nil {
		return fmt.Errorf("%s is %q, not a numeric uid: with --allowed-uids %s only numeric users are allowed (give the image a numeric USER, or pass --assemble-user UID)", what, name, rs)
	}
	if !rs.contains(uint32(uid)) {
		shown := name
		if uid == 0 {
			shown += " (root)"
		}
		return fmt.Errorf("%s is uid %s, outside --allowed-uids %s: refusing to build (pass --assemble-user with an allowed uid, or use a builder that runs as one)", what, shown, rs)
	}
	return nil
}
