package archive

import (
	"errors"
	"io"
	"sync"
)

// Sizes of a blockPipe's buffer: enough for a compressor or decompressor on one side and
// file system calls on the other to overlap, small enough to stay out of the memory budget.
const (
	pipeBlockSize = 256 << 10
	pipeBlocks    = 4
)

// errPipeReaderGone is what a blockPipe's writer gets once the reader has stopped reading.
var errPipeReaderGone = errors.New("the reading side stopped")

// blockPipe is an in-memory pipe holding up to pipeBlocks blocks, for a writer and a reader
// in two goroutines: unlike io.Pipe, a write returns as soon as its bytes are copied into a
// block, so both sides work at once. One goroutine writes (Write, then CloseWrite) and one
// reads (Read, then CloseRead).
type blockPipe struct {
	full chan []byte   // filled blocks in order; closed by CloseWrite
	free chan []byte   // blocks the reader is done with
	gone chan struct{} // closed by CloseRead
	once sync.Once
	werr error // the writer's error, read after full is closed

	wblk []byte // block being filled (writer side)
	rblk []byte // block being read, and rest its unread part (reader side)
	rest []byte
}

func newBlockPipe() *blockPipe {
	p := &blockPipe{
		full: make(chan []byte, pipeBlocks),
		free: make(chan []byte, pipeBlocks),
		gone: make(chan struct{}),
	}
	for range pipeBlocks - 1 {
		p.free <- make([]byte, 0, pipeBlockSize)
	}
	p.wblk = make([]byte, 0, pipeBlockSize)
	return p
}

// Write copies b into blocks, waiting for a free block when all are full.
func (p *blockPipe) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		k := copy(p.wblk[len(p.wblk):cap(p.wblk)], b)
		p.wblk = p.wblk[:len(p.wblk)+k]
		b = b[k:]
		if len(p.wblk) < cap(p.wblk) {
			break
		}
		if err := p.send(); err != nil {
			return n - len(b), err
		}
	}
	return n, nil
}

// send hands the current block to the reader and takes a free one.
func (p *blockPipe) send() error {
	select {
	case p.full <- p.wblk:
	case <-p.gone:
		return errPipeReaderGone
	}
	select {
	case p.wblk = <-p.free:
		p.wblk = p.wblk[:0]
		return nil
	case <-p.gone:
		p.wblk = nil
		return errPipeReaderGone
	}
}

// CloseWrite sends what is left and ends the stream: the reader gets err after the bytes
// written, or io.EOF when err is nil.
func (p *blockPipe) CloseWrite(err error) {
	if len(p.wblk) > 0 {
		select {
		case p.full <- p.wblk:
		case <-p.gone:
		}
	}
	p.wblk = nil
	p.werr = err
	close(p.full)
}

// Read reads from the blocks in order.
func (p *blockPipe) Read(b []byte) (int, error) {
	for len(p.rest) == 0 {
		if p.rblk != nil {
			p.free <- p.rblk // never blocks: there are fewer blocks than its capacity
			p.rblk = nil
		}
		blk, ok := <-p.full
		if !ok {
			if p.werr != nil {
				return 0, p.werr
			}
			return 0, io.EOF
		}
		p.rblk, p.rest = blk, blk
	}
	n := copy(b, p.rest)
	p.rest = p.rest[n:]
	return n, nil
}

// CloseRead tells the writer that nothing more will be read: its writes fail from then on.
func (p *blockPipe) CloseRead() {
	p.once.Do(func() { close(p.gone) })
}

// ReadAhead runs produce in a goroutine, writing into a blockPipe, and returns the pipe's
// reading side: whatever produce does (decompress, hash, download) overlaps with what the
// caller does with the bytes. The reader ends with produce's error, or io.EOF. Close must be
// called; it stops produce's next write and waits for produce to return, calling unblock
// first (when not nil) if produce is still running, to wake a read that could block forever,
// such as one from the network.
func ReadAhead(produce func(w io.Writer) error, unblock func()) io.ReadCloser {
	a := &aheadReader{p: newBlockPipe(), done: make(chan struct{}), unblock: unblock}
	go func() {
		defer close(a.done)
		a.p.CloseWrite(produce(a.p))
	}()
	return a
}

type aheadReader struct {
	p       *blockPipe
	done    chan struct{}
	unblock func()
}

func (a *aheadReader) Read(b []byte) (int, error) { return a.p.Read(b) }

func (a *aheadReader) Close() error {
	a.p.CloseRead()
	select {
	case <-a.done:
		return nil
	default:
	}
	if a.unblock != nil {
		a.unblock()
	}
	<-a.done
	return nil
}
