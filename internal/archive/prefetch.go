package archive

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// On a tree of small files, WriteDiff spends most of its time in system calls: open, list
// xattrs, read, close, each waiting for the one before. Two goroutines per directory make those
// calls for the directory's small files ahead of the tar writer, so they run beside it; what
// they have read waits in memory, at most prefetchBudget bytes for the whole walk. Measured on
// 2 cores with 100,000 files of 40 bytes, writing and hashing the layer took 0.70 s instead of
// 0.95 s (one goroutine: 0.78 s). Larger files are left to the writer: their cost is bytes,
// which the hashing or compressing goroutine already overlaps, and reading them ahead only
// added copies (5–10% slower on a Debian root).
const (
	prefetchMaxFile = 16 << 10
	prefetchBudget  = 16 << 20
	prefetchReaders = 2
)

// States of a prefetched file: nobody has it yet, the reading goroutine has it (and closes
// ready when done), or the writer read it itself.
const (
	slotFree int32 = iota
	slotClaimed
	slotTaken
)

// prefetched is one small file of a directory, read ahead of the writer.
type prefetched struct {
	state  atomic.Int32
	size   int64         // bytes of the budget it takes
	ready  chan struct{} // closed once data, xattrs and err are set
	data   []byte
	xattrs map[string]string
	err    error
}

// prefetch starts reading the small regular files among children, the entries of the
// directory open as dirfd, and returns a slot per child (nil where the writer reads the entry
// itself) and the function that stops the reading. The writer calls take on a child's slot
// before writing it; stop must be called before dirfd is closed.
func (d *differ) prefetch(ctx context.Context, dirfd int, children []child) (slots []*prefetched, stop func()) {
	n := 0
	slots = make([]*prefetched, len(children))
	for i := range children {
		st := &children[i].st
		if children[i].whiteout || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || st.Size > prefetchMaxFile {
			continue
		}
		slots[i] = &prefetched{size: st.Size, ready: make(chan struct{})}
		n++
	}
	if n < 2 {
		clear(slots) // the writer reads the one file as fast itself
		return slots, func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var next atomic.Int64 // the next slot a reader looks at
	var readers sync.WaitGroup
	for range prefetchReaders {
		readers.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(slots) {
					return
				}
				s := slots[i]
				if s == nil {
					continue
				}
				if err := d.budget.Acquire(ctx, s.size); err != nil {
					return // stopped
				}
				if !s.state.CompareAndSwap(slotFree, slotClaimed) {
					d.budget.Release(s.size) // the writer got there first
					continue
				}
				s.data, s.xattrs, s.err = readSmallFile(dirfd, children[i].name, s.size)
				close(s.ready)
			}
		})
	}
	return slots, func() {
		cancel()
		readers.Wait()
		// Files read but never written (the walk failed first) give their memory back.
		for _, s := range slots {
			if s != nil && s.state.Load() == slotClaimed {
				d.done(s)
			}
		}
	}
}

// take reports whether the file of s has been read ahead, waiting for the read when it is
// under way; false means the writer reads the file itself (s is nil, or nobody started).
func (s *prefetched) take() bool {
	if s == nil || s.state.CompareAndSwap(slotFree, slotTaken) {
		return false
	}
	<-s.ready
	return true
}

// done gives the memory of a prefetched file back once the writer has written it.
func (d *differ) done(s *prefetched) {
	s.state.Store(slotTaken)
	d.budget.Release(s.size)
	s.data = nil
}

// readSmallFile reads the xattrs and the size bytes of content of the regular file base of
// the directory dirfd, with the messages WriteDiff gives when it reads a file itself.
func readSmallFile(dirfd int, base string, size int64) ([]byte, map[string]string, error) {
	fd, err := unix.Openat(dirfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("opening: %w", err)
	}
	defer unix.Close(fd)
	xattrs, err := readXattrs(xattrTarget{fd: fd})
	if err != nil {
		return nil, nil, err
	}
	data := make([]byte, size)
	if err := readExactly(fd, data, 0, size); err != nil {
		return nil, nil, err
	}
	return data, xattrs, nil
}
