// Package podrecord gathers a pod's own record for a collection (podcopy/include): the pod
// object, its events, and each container's current and previous log, read through the API
// with the agent's own credentials and spooled to local files of bounded size, so a
// collection stores them beside the files and the manifest hashes them like any file.
package podrecord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
)

// Record kinds in the manifest.
const (
	KindSpec        = "spec"
	KindEvents      = "events"
	KindLog         = "log"
	KindPreviousLog = "previous-log"
)

// Defaults.
const (
	// DefaultMaxLogBytes bounds each container log kept: of its last TailLines lines, the
	// first bytes up to this (the record says truncated).
	DefaultMaxLogBytes = 16 << 20
	// TailLines is how many of a log's last lines are read.
	TailLines = 100000
	// MaxEvents bounds the events kept of one pod (the newest are the API server's last).
	MaxEvents = 1000
)

// Gatherer reads pod records through the API.
type Gatherer struct {
	Client kubernetes.Interface
	// SpoolDir holds the spooled records while the collection runs ("": os.TempDir()).
	SpoolDir string
	// MaxLogBytes bounds each log (DefaultMaxLogBytes when 0).
	MaxLogBytes int64
}

// Gather reads what include names of pod (request.IncludeSpec, IncludeEvents, IncludeLogs)
// into spool files. A record that cannot be read is returned with its Error set, not as an
// error: the files are still collected. Call cleanup when the collection has ended.
func (g Gatherer) Gather(ctx context.Context, pod *corev1.Pod, include []string) (records []ship.RecordFile, cleanup func(), err error) {
	dir, err := os.MkdirTemp(g.SpoolDir, "podcopy-records-")
	if err != nil {
		return nil, func() {}, err
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	n := 0
	spool := func(name, kind, container string, write func(io.Writer) (truncated bool, err error)) {
		rec := manifest.Record{Name: path.Join(layout.RecordsName, name), Kind: kind, Container: container}
		n++
		file := path.Join(dir, fmt.Sprint(n))
		truncated, err := writeFile(file, write)
		if err != nil {
			rec.Error = manifest.Truncate(err.Error(), 512)
			records = append(records, ship.RecordFile{Record: rec})
			return
		}
		rec.Truncated = truncated
		records = append(records, ship.RecordFile{Record: rec, Open: func() (io.ReadCloser, int64, error) {
			f, err := os.Open(file)
			if err != nil {
				return nil, 0, err
			}
			fi, err := f.Stat()
			if err != nil {
				_ = f.Close()
				return nil, 0, err
			}
			return f, fi.Size(), nil
		}})
	}
	// The pod as the API server has it now (the informer's copy keeps little): for its
	// record, and for the restart counts that say which previous logs exist.
	var fresh *corev1.Pod
	ferr := errors.New("not read")
	if request.Has(include, request.IncludeSpec) || request.Has(include, request.IncludeLogs) {
		fresh, ferr = g.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if ferr == nil && fresh.UID != pod.UID {
			ferr = fmt.Errorf("pod %s/%s was replaced (uid %s, not %s)", pod.Namespace, pod.Name, fresh.UID, pod.UID)
		}
	}
	if request.Has(include, request.IncludeSpec) {
		spool("pod.json", KindSpec, "", func(w io.Writer) (bool, error) {
			if ferr != nil {
				return false, ferr
			}
			return false, encode(w, Sanitize(fresh))
		})
	}
	if request.Has(include, request.IncludeEvents) {
		spool("events.json", KindEvents, "", func(w io.Writer) (bool, error) {
			list, err := g.Client.CoreV1().Events(pod.Namespace).List(ctx, metav1.ListOptions{
				FieldSelector: fields.OneTermEqualSelector("involvedObject.uid", string(pod.UID)).String(),
				Limit:         MaxEvents,
			})
			if err != nil {
				return false, err
			}
			list.ListMeta = metav1.ListMeta{}
			for i := range list.Items {
				list.Items[i].ManagedFields = nil
			}
			list.Kind, list.APIVersion = "EventList", "v1"
			return false, encode(w, list)
		})
	}
	if request.Has(include, request.IncludeLogs) {
		src := pod
		if ferr == nil {
			src = fresh
		}
		for _, c := range containers(src) {
			spool("logs/"+c.name+".log", KindLog, c.name, g.log(ctx, pod, c.name, false))
			if c.restarts > 0 {
				spool("logs/"+c.name+".previous.log", KindPreviousLog, c.name, g.log(ctx, pod, c.name, true))
			}
		}
	}
	return records, cleanup, nil
}

// log streams one container's log (the last MaxLogBytes of it).
func (g Gatherer) log(ctx context.Context, pod *corev1.Pod, container string, previous bool) func(io.Writer) (bool, error) {
	return func(w io.Writer) (bool, error) {
		limit := g.MaxLogBytes
		if limit <= 0 {
			limit = DefaultMaxLogBytes
		}
		stream, err := g.Client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{
			Container: container, Previous: previous, LimitBytes: &limit, TailLines: ptr(int64(TailLines)),
		}).Stream(ctx)
		if err != nil {
			return false, err
		}
		defer stream.Close()
		n, err := io.Copy(w, io.LimitReader(stream, limit))
		return n >= limit, err
	}
}

type container struct {
	name     string
	restarts int32
}

// containers are the pod's containers, init containers first, with their restart counts.
func containers(pod *corev1.Pod) []container {
	restarts := map[string]int32{}
	for _, cs := range slices.Concat(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses) {
		restarts[cs.Name] = cs.RestartCount
	}
	var out []container
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		out = append(out, container{name: c.Name, restarts: restarts[c.Name]})
	}
	return out
}

// Sanitize is the pod as stored: managedFields dropped. A pod holds no Secret value (env
// and volumes only name Secrets; the agent never reads one), so nothing else is removed.
func Sanitize(pod *corev1.Pod) *corev1.Pod {
	out := pod.DeepCopy()
	out.ManagedFields = nil
	out.Kind, out.APIVersion = "Pod", "v1"
	return out
}

func ptr[T any](v T) *T { return &v }

func encode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(v)
}

// writeFile creates file and fills it with write.
func writeFile(file string, write func(io.Writer) (bool, error)) (bool, error) {
	f, err := os.OpenFile(file, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return false, err
	}
	truncated, werr := write(f)
	return truncated, errors.Join(werr, f.Close())
}
