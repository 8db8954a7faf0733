package archive

import (
	"bytes"
	"encoding/binary"
	"hash"
	"hash/crc32"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
)

// Parallel gzip, as pigz writes it: the input is cut into blocks of pgzipBlockSize, each
// compressed on its own goroutine into raw deflate that ends on a byte boundary (a sync flush;
// the last block ends with the final block instead), primed with the 32 KiB of input before
// it so that matches may reach back as a single stream's would. The pieces, in order, between
// one gzip header and trailer, are one ordinary gzip member that any reader decompresses. The
// cuts depend only on the input, so the output is the same for the same input.
const (
	pgzipBlockSize = 1 << 20
	pgzipWindow    = 32 << 10
)

// pgzipWriter is an io.WriteCloser that gzips in parallel into w.
type pgzipWriter struct {
	w     io.Writer
	level int

	crc  hash.Hash32
	size uint32 // input length modulo 2^32, as gzip's trailer wants it
	cur  []byte // the block being filled
	dict []byte // the last pgzipWindow bytes before cur

	pending chan chan pgzipResult // compressed blocks, in input order
	sem     chan struct{}         // bounds the blocks being compressed
	done    chan error            // the writing goroutine's result
	pool    sync.Pool             // *flate.Writer
	blocks  sync.Pool             // *[]byte: input blocks and output buffers, reused
	err     error                 // a failure seen by Close, returned from then on
	closed  bool
}

type pgzipResult struct {
	data []byte
	err  error
}

// newPgzipWriter starts a parallel gzip writer into w at level (a flate level).
func newPgzipWriter(w io.Writer, level int) *pgzipWriter {
	workers := max(runtime.GOMAXPROCS(0), 1)
	z := &pgzipWriter{
		w: w, level: level, crc: crc32.NewIEEE(),
		cur:     make([]byte, 0, pgzipBlockSize),
		pending: make(chan chan pgzipResult, 2*workers),
		sem:     make(chan struct{}, workers),
		done:    make(chan error, 1),
	}
	go z.drain()
	return z
}

// drain writes the header, then each compressed block as it becomes ready, in order.
func (z *pgzipWriter) drain() {
	// ID1 ID2, CM=deflate, no flags, MTIME 0 (none), XFL 0, OS 255 (unknown).
	_, err := z.w.Write([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255})
	for res := range z.pending {
		r := <-res
		if err == nil {
			err = r.err
		}
		if err == nil {
			_, err = z.w.Write(r.data)
		}
		z.putBuf(r.data)
	}
	z.done <- err
}

func (z *pgzipWriter) Write(p []byte) (int, error) {
	if z.closed {
		return 0, io.ErrClosedPipe
	}
	z.crc.Write(p)
	z.size += uint32(len(p))
	n := len(p)
	for len(p) > 0 {
		// Blocks are cut at pgzipBlockSize exactly, whatever the buffer's capacity: the cuts,
		// and so the output, depend on the input alone.
		k := copy(z.cur[len(z.cur):pgzipBlockSize], p)
		z.cur = z.cur[:len(z.cur)+k]
		p = p[k:]
		if len(z.cur) == pgzipBlockSize {
			z.submit(false)
		}
	}
	return n, nil
}

// submit hands the current block to a compressing goroutine and starts a new one.
func (z *pgzipWriter) submit(last bool) {
	block, dict := z.cur, z.dict
	// The next block's dictionary, copied now: once compressed, block goes back to the pool.
	next := make([]byte, 0, pgzipWindow)
	if len(block) < pgzipWindow {
		next = append(next, dict[max(len(dict)+len(block)-pgzipWindow, 0):]...)
	}
	z.dict = append(next, block[max(len(block)-pgzipWindow, 0):]...)
	res := make(chan pgzipResult, 1)
	z.pending <- res
	z.sem <- struct{}{}
	go func() {
		defer func() { <-z.sem }()
		r := z.compress(block, dict, last)
		z.putBuf(block)
		res <- r
	}()
	z.cur = z.getBuf()
}

// getBuf returns an empty buffer of pgzipBlockSize capacity (plus room for deflate's worst
// case), new or reused: a layer of gigabytes would otherwise be as many gigabytes of garbage.
func (z *pgzipWriter) getBuf() []byte {
	if b, ok := z.blocks.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, pgzipBlockSize+pgzipBlockSize/64+1024)
}

func (z *pgzipWriter) putBuf(b []byte) {
	if cap(b) >= pgzipBlockSize {
		z.blocks.Put(&b)
	}
}

// compress deflates one block primed with dict; last ends the stream.
func (z *pgzipWriter) compress(block, dict []byte, last bool) pgzipResult {
	out := bytes.NewBuffer(z.getBuf())
	fw, _ := z.pool.Get().(*flate.Writer)
	if fw == nil {
		var err error
		if fw, err = flate.NewWriterDict(out, z.level, dict); err != nil {
			return pgzipResult{err: err}
		}
	} else {
		fw.ResetDict(out, dict)
	}
	defer z.pool.Put(fw)
	if _, err := fw.Write(block); err != nil {
		return pgzipResult{err: err}
	}
	var err error
	if last {
		err = fw.Close()
	} else {
		err = fw.Flush()
	}
	return pgzipResult{data: out.Bytes(), err: err}
}

// Close compresses what is left, waits for every block and writes the trailer.
func (z *pgzipWriter) Close() error {
	if z.closed {
		return z.err
	}
	z.closed = true
	z.submit(true)
	close(z.pending)
	if err := <-z.done; err != nil {
		z.err = err
		return err
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], z.crc.Sum32())
	binary.LittleEndian.PutUint32(trailer[4:], z.size)
	if _, err := z.w.Write(trailer[:]); err != nil {
		z.err = err
		return err
	}
	return nil
}
