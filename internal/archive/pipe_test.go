package archive

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"testing"
	"time"
)

func TestReadAheadCarriesBytesAndErrors(t *testing.T) {
	data := make([]byte, 3*pipeBlocks*pipeBlockSize+12345)
	rand.New(rand.NewSource(1)).Read(data)
	r := ReadAhead(func(w io.Writer) error {
		for b := data; len(b) > 0; { // odd-sized writes cross block boundaries
			n := min(len(b), 70001)
			if _, err := w.Write(b[:n]); err != nil {
				return err
			}
			b = b[n:]
		}
		return nil
	}, nil)
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (err %v), want the %d written", len(got), err, len(data))
	}
	r.Close()

	boom := errors.New("boom")
	r = ReadAhead(func(w io.Writer) error {
		w.Write([]byte("partial"))
		return boom
	}, nil)
	got, err = io.ReadAll(r)
	if !errors.Is(err, boom) || string(got) != "partial" {
		t.Fatalf("got %q, %v; want the partial bytes, then the producer's error", got, err)
	}
	r.Close()
}

func TestReadAheadCloseStopsProducer(t *testing.T) {
	// A producer blocked on a read that only unblock can end, and one blocked on a full pipe.
	hang := make(chan struct{})
	r := ReadAhead(func(w io.Writer) error {
		<-hang
		return errors.New("unblocked")
	}, func() { close(hang) })
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return after unblocking the producer")
	}

	var writeErr error
	r = ReadAhead(func(w io.Writer) error {
		buf := make([]byte, pipeBlockSize)
		for {
			if _, err := w.Write(buf); err != nil {
				writeErr = err
				return err
			}
		}
	}, nil)
	r.Read(make([]byte, 10))
	r.Close()
	if !errors.Is(writeErr, errPipeReaderGone) {
		t.Fatalf("producer's write after Close: %v, want errPipeReaderGone", writeErr)
	}
}

// failingWriter fails every write after the first n bytes.
type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, errors.New("disk full")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestBlobWriterReportsCompressorFailure(t *testing.T) {
	bw, err := NewBlobWriter(&failingWriter{n: 1000}, None)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	for i := 0; i < 100 && err == nil; i++ {
		_, err = bw.Write(buf)
	}
	if cerr := bw.Close(); err == nil {
		err = cerr
	}
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("disk full")) {
		t.Fatalf("writing 6 MiB into a writer that fails after 1000 bytes: %v, want disk full", err)
	}
}
