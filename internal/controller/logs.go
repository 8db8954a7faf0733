package controller

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
)

// Build logs outlive their pods: while a build runs, the controller follows its pod's log and
// saves it in chunks, as gzip-compressed ConfigMaps owned by the Build (NAME-log-0, -1, ...).
//
// Why ConfigMaps: they are in the cluster's own durable, replicated store, so saved logs
// survive the pod, the node and a controller restart with no storage system to install; the
// Build owns them, so they go when history limits prune it; and a client reads them with the
// same RBAC that lets it read builds. etcd is not made for bulk data, so chunks are at most
// chunkSize compressed bytes (far under its 1.5 MiB object limit) and a build keeps at most
// maxChunks of them; past that the log is cut with a note saying so.

const (
	// chunkSize is the most uncompressed bytes in one chunk.
	chunkSize = 1 << 20
	// maxChunks bounds the chunks of one build.
	maxChunks = 32
	// flushEvery saves a partial chunk at least this often while a build runs.
	flushEvery = 5 * time.Second
	// LogChunkLabel names the build a log chunk belongs to.
	LogChunkLabel = "kiln.dev/log-of"
	// logCompleteAnnotation marks the last chunk of a finished log.
	logCompleteAnnotation = "kiln.dev/log-complete"
	// logOffsetAnnotation is the uncompressed offset of a chunk in the whole log.
	logOffsetAnnotation = "kiln.dev/log-offset"
)

// LogSource opens the log of one container of a pod, following it while the container runs.
type LogSource interface {
	Open(ctx context.Context, namespace, pod, container string) (io.ReadCloser, error)
}

// PodLogs is the LogSource of a real cluster: the kubelet's log, through the API server.
type PodLogs struct{ Clientset kubernetes.Interface }

// Open implements LogSource.
func (p PodLogs) Open(ctx context.Context, namespace, pod, container string) (io.ReadCloser, error) {
	return p.Clientset.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container, Follow: true}).Stream(ctx)
}

// logCollector follows the logs of running builds and saves them.
type logCollector struct {
	client client.Client
	// reader reads around the cache: chunks just written must be seen at once.
	reader client.Reader
	source LogSource

	mu sync.Mutex
	// running holds, for each build being followed, the channel that wakes its follower.
	running map[client.ObjectKey]chan struct{}
}

func newLogCollector(c client.Client, r client.Reader, src LogSource) *logCollector {
	return &logCollector{client: c, reader: r, source: src, running: map[client.ObjectKey]chan struct{}{}}
}

// follow starts saving b's log unless that is already under way, in which case it wakes the
// follower to look at the pod again (it changed). It is called on every reconcile of a
// Pending or Running build, so a restarted controller picks logs up again.
func (lc *logCollector) follow(ctx context.Context, b *kilnv1.Build) {
	if lc == nil || lc.source == nil {
		return
	}
	key := client.ObjectKeyFromObject(b)
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if wake, ok := lc.running[key]; ok {
		select {
		case wake <- struct{}{}:
		default:
		}
		return
	}
	wake := make(chan struct{}, 1)
	lc.running[key] = wake
	build := b.DeepCopy()
	go func() {
		defer func() {
			lc.mu.Lock()
			delete(lc.running, key)
			lc.mu.Unlock()
		}()
		if err := lc.save(context.WithoutCancel(ctx), build, wake); err != nil {
			log.FromContext(ctx).Error(err, "saving the build log", "build", key)
		}
	}()
}

// save follows the fetch and build containers in turn and writes the log in chunks, skipping
// what earlier chunks already hold (after a controller restart the log is read from its start).
func (lc *logCollector) save(ctx context.Context, b *kilnv1.Build, wake <-chan struct{}) error {
	chunks, err := ListLogChunks(ctx, lc.reader, b.Namespace, b.Name)
	if err != nil {
		return err
	}
	if len(chunks) > 0 && chunks[len(chunks)-1].Annotations[logCompleteAnnotation] == "true" {
		return nil
	}
	w := &chunkWriter{ctx: ctx, c: lc.client, build: b, next: len(chunks)}
	if len(chunks) > 0 {
		// Rewrite the last, partial chunk from its start.
		last := chunks[len(chunks)-1]
		w.next = len(chunks) - 1
		w.offset, _ = strconv.ParseInt(last.Annotations[logOffsetAnnotation], 10, 64)
	}
	w.skip = w.offset
	var pos int64
	for _, container := range []string{fetchContainer, buildContainer} {
		rc, err := lc.openWhenStarted(ctx, b, container, wake)
		if err != nil {
			return err
		}
		if rc == nil {
			continue
		}
		n, err := w.copy(rc, &pos)
		rc.Close()
		if err != nil {
			return fmt.Errorf("reading the log of %s/%s: %w (after %d bytes)", PodName(b), container, err, n)
		}
	}
	if err := w.close(); err != nil {
		return err
	}
	return lc.snippet(ctx, client.ObjectKeyFromObject(b))
}

// snippet puts the end of the saved log into the status of a build that failed, once the
// whole log is saved (the build may have ended before or after that).
func (lc *logCollector) snippet(ctx context.Context, key client.ObjectKey) error {
	for range 30 {
		var b kilnv1.Build
		if err := lc.client.Get(ctx, key, &b); err != nil {
			return client.IgnoreNotFound(err)
		}
		switch {
		case b.Status.Phase == kilnv1.BuildPhaseComplete:
			return nil
		case b.Status.Phase.Final():
			b.Status.LogSnippet = logTail(ctx, lc.reader, &b, snippetLines)
			err := lc.client.Status().Update(ctx, &b)
			if !apierrors.IsConflict(err) {
				return err
			}
		default:
			time.Sleep(time.Second)
		}
	}
	return nil
}

// snippetLines is how much of a failed build's log its status shows.
const snippetLines = 20

// openWhenStarted opens a container's log once the container has started; nil when it never
// will (the pod is gone or ended without it).
func (lc *logCollector) openWhenStarted(ctx context.Context, b *kilnv1.Build, container string, wake <-chan struct{}) (io.ReadCloser, error) {
	for {
		var pod corev1.Pod
		err := lc.client.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: PodName(b)}, &pod)
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if started(pod, container) {
			return lc.source.Open(ctx, b.Namespace, pod.Name, container)
		}
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		case <-time.After(time.Second):
		}
	}
}

// started reports whether a container of pod has started (is running or has ended).
func started(pod corev1.Pod, container string) bool {
	for _, cs := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if cs.Name == container {
			return cs.State.Running != nil || cs.State.Terminated != nil
		}
	}
	return false
}

// chunkWriter cuts a log into ConfigMaps.
type chunkWriter struct {
	ctx    context.Context
	c      client.Client
	build  *kilnv1.Build
	next   int   // number of the chunk being filled
	offset int64 // log offset where it starts
	skip   int64 // log bytes already saved
	buf    bytes.Buffer
	cut    bool
}

// copy reads r to its end, saving the log; pos is the running offset over all containers.
func (w *chunkWriter) copy(r io.Reader, pos *int64) (int64, error) {
	p := make([]byte, 32<<10)
	var total int64
	lastFlush := time.Now()
	for {
		n, err := r.Read(p)
		total += int64(n)
		data := p[:n]
		if *pos < w.skip {
			drop := min(int64(len(data)), w.skip-*pos)
			*pos += drop
			data = data[drop:]
		}
		*pos += int64(len(data))
		if werr := w.write(data); werr != nil {
			return total, werr
		}
		if time.Since(lastFlush) > flushEvery && w.buf.Len() > 0 {
			if ferr := w.flush(false); ferr != nil {
				return total, ferr
			}
			lastFlush = time.Now()
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (w *chunkWriter) write(data []byte) error {
	for len(data) > 0 && !w.cut {
		room := chunkSize - w.buf.Len()
		take := min(room, len(data))
		w.buf.Write(data[:take])
		data = data[take:]
		if w.buf.Len() == chunkSize {
			if err := w.flush(false); err != nil {
				return err
			}
			w.offset += int64(w.buf.Len())
			w.buf.Reset()
			w.next++
			if w.next == maxChunks-1 {
				w.buf.WriteString(fmt.Sprintf("\n[kiln: the log is cut here: a build keeps at most %d MiB of log]\n", maxChunks*chunkSize>>20))
				w.cut = true
			}
		}
	}
	return nil
}

// close saves the last chunk, marked complete.
func (w *chunkWriter) close() error { return w.flush(true) }

// flush writes the chunk being filled (replacing an earlier save of it).
func (w *chunkWriter) flush(complete bool) error {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(w.buf.Bytes())
	zw.Close()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Namespace: w.build.Namespace,
		Name:      fmt.Sprintf("%s-log-%d", w.build.Name, w.next),
	}}
	_, err := controllerutil.CreateOrUpdate(w.ctx, w.c, cm, func() error {
		cm.Labels = map[string]string{LogChunkLabel: w.build.Name}
		cm.Annotations = map[string]string{logOffsetAnnotation: strconv.FormatInt(w.offset, 10)}
		if complete {
			cm.Annotations[logCompleteAnnotation] = "true"
		}
		cm.BinaryData = map[string][]byte{"log.gz": z.Bytes()}
		return controllerutil.SetOwnerReference(w.build, cm, w.c.Scheme())
	})
	if err != nil {
		return fmt.Errorf("saving log chunk %s: %w", cm.Name, err)
	}
	return nil
}

// ListLogChunks returns the saved log chunks of a build, in order.
func ListLogChunks(ctx context.Context, c client.Reader, namespace, build string) ([]corev1.ConfigMap, error) {
	var list corev1.ConfigMapList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels{LogChunkLabel: build}); err != nil {
		return nil, fmt.Errorf("listing the log of %s: %w", build, err)
	}
	number := func(cm corev1.ConfigMap) int {
		n, _ := strconv.Atoi(cm.Name[strings.LastIndex(cm.Name, "-")+1:])
		return n
	}
	sort.Slice(list.Items, func(i, j int) bool { return number(list.Items[i]) < number(list.Items[j]) })
	return list.Items, nil
}

// WriteSavedLog writes a build's saved log to w; complete says whether it is the whole log.
func WriteSavedLog(ctx context.Context, c client.Reader, namespace, build string, w io.Writer) (complete bool, err error) {
	chunks, err := ListLogChunks(ctx, c, namespace, build)
	if err != nil {
		return false, err
	}
	for _, cm := range chunks {
		zr, err := gzip.NewReader(bytes.NewReader(cm.BinaryData["log.gz"]))
		if err != nil {
			return false, fmt.Errorf("reading log chunk %s: %w", cm.Name, err)
		}
		if _, err := io.Copy(w, zr); err != nil {
			return false, fmt.Errorf("reading log chunk %s: %w", cm.Name, err)
		}
		complete = cm.Annotations[logCompleteAnnotation] == "true"
	}
	return complete, nil
}

// logTail is the end of a build's saved log, for the status of a failed build.
func logTail(ctx context.Context, c client.Reader, b *kilnv1.Build, lines int) string {
	var buf bytes.Buffer
	if _, err := WriteSavedLog(ctx, c, b.Namespace, b.Name, &buf); err != nil {
		return ""
	}
	all := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
