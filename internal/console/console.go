// Package console is podcopy's evidence console: JSON routes beside the web shell (same
// listener, sign-in and Origin rules) that list, inspect, verify, start, stop and download
// collections. Every read and write is the signed-in user's own: their token reaches the
// API server (RBAC, admission and the audit log see them) and the analysis pod, through
// the plugin's evidence API (package cli). Only the published custody keys, which are
// public, are read with the agent's identity.
package console

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/evidence"
	"github.com/podcopy/podcopy/internal/plugin"
	"github.com/podcopy/podcopy/internal/shell"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

// Prefix is where the console's routes live.
const Prefix = "/api/v1/console/"

// Bounds of the console.
const (
	// maxCollections is how many collections of a pod are listed (newest first), each
	// inspected (its signature checked).
	maxCollections = 50
	// ticketTTL is how long a download ticket waits for the browser to use it.
	ticketTTL = time.Minute
	// resultTTL is how long a finished download's result can be read.
	resultTTL = 10 * time.Minute
	// maxTickets bounds the downloads held (pending, running or finished) per user.
	maxTickets = 16
	// apiTimeout bounds every call that is not a stream.
	apiTimeout = 3 * time.Minute
	// maxBody bounds a request body (a collect request).
	maxBody = 64 << 10
)

// Metrics are the console's metrics.
type Metrics struct {
	Requests  *prometheus.CounterVec
	Downloads *prometheus.CounterVec
}

// NewMetrics registers the console's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podcopy_console_requests_total",
			Help: "Evidence console API requests by route and HTTP status code."}, []string{"route", "code"}),
		Downloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podcopy_console_downloads_total",
			Help: "Collections downloaded from the console by result (verified, failed: a file did not match, error: the stream broke)."}, []string{"result"}),
	}
	reg.MustRegister(m.Requests, m.Downloads)
	return m
}

// downloadSpool bounds the disk one download's stream may wait in (Console.SpoolDir): with
// Parallel downloads at once (2 by default), 256 MiB of the agent's spool volume.
const downloadSpool = 128 << 20

// Console serves the routes.
type Console struct {
	// Metrics, when set, counts requests and downloads.
	Metrics *Metrics
	// Authenticate signs in a request (the shell server's Authenticate).
	Authenticate func(r *http.Request) (shell.User, string, int, error)
	// OriginAllowed checks a browser request's Origin (the shell server's).
	OriginAllowed func(r *http.Request) bool
	// Clients are the user's own API client and executor for a token.
	Clients func(token string) (kubernetes.Interface, exec.Executor, error)
	// Keys are the published custody keys (published false: the cluster does not sign).
	Keys func(ctx context.Context) (custody.Trust, bool, error)
	// Destination is the agent's destination settings: where analysis pods are, their
	// directory, retention.
	Destination destination.Config
	// MaxManifestBytes is the agent's own cap on a manifest (policy.maxManifestBytes): the
	// most the console reads of one; a record is read up to 4/3 of it (base64) plus 64 KiB.
	// 0: 8 MiB.
	MaxManifestBytes int
	// Parallel bounds the evidence requests served at once (reading records and manifests
	// and hashing), and again the downloads streaming at once (0: 2 each): the console runs
	// inside the agent, whose memory holds collections in flight too.
	Parallel int
	// SlotWait is how long a request waits for a slot before it is told the console is busy
	// (0: 10 s).
	SlotWait time.Duration
	// SpoolDir is where a download's stream from the analysis pod waits while the browser
	// reads more slowly than the analysis pod writes (the agent's spoolDir; "":
	// os.TempDir()): at most downloadSpool bytes per download after 8 MiB in memory.
	SpoolDir string
	Log      logr.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu        sync.Mutex
	downloads map[string]*download
	reading   chan struct{} // evidence reads in progress (made by Register)
	streaming chan struct{} // downloads in progress (made by Register)
}

// slot holds one of slots for the request, or answers 503 (busy) and returns false.
func (c *Console) slot(w http.ResponseWriter, r *http.Request, slots chan struct{}) (release func(), ok bool) {
	wait := c.SlotWait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, true
	case <-r.Context().Done():
	case <-t.C:
	}
	w.Header().Set("Retry-After", "5")
	writeError(w, http.StatusServiceUnavailable, "the console is busy reading other collections; try again in a few seconds")
	return nil, false
}

// verifyKeys are the published keys, as the verifier takes them.
func (c *Console) verifyKeys(ctx context.Context) (verify.Keys, error) {
	t, published, err := c.Keys(ctx)
	return verify.Keys{Trust: t, Required: published}, err
}

// limits are the read caps the console gives the evidence library.
func (c *Console) limits() (manifestMax, recordMax int) {
	manifestMax = c.MaxManifestBytes
	if manifestMax <= 0 {
		manifestMax = 8 << 20
	}
	return manifestMax, manifestMax/3*4 + 64<<10
}

// download is one download ticket: who asked for which collection, and what happened.
type download struct {
	user               string
	namespace, pod, id string
	created            time.Time
	state              string // "pending", "streaming", "done"
	ended              time.Time
	result             *evidence.Result
	err                string
	// reader reads with the user's clients, held until the ticket is used.
	reader *evidence.Reader
}

// Register adds the routes to mux.
func (c *Console) Register(mux *http.ServeMux) {
	n := c.Parallel
	if n <= 0 {
		n = 2
	}
	c.reading, c.streaming = make(chan struct{}, n), make(chan struct{}, n)
	for _, r := range []struct {
		method, path string
		h            func(w http.ResponseWriter, r *http.Request, k call)
		reads        bool // reads evidence: records, manifests, files
	}{
		{"GET", "namespaces", c.namespaces, false},
		{"GET", "pods", c.pods, false},
		{"GET", "collections", c.collections, true},
		{"GET", "collection", c.collection, true},
		{"GET", "preview", c.preview, true},
		{"POST", "verify", c.verify, true},
		{"POST", "collect", c.collect, false},
		{"POST", "stop", c.stop, false},
		{"POST", "downloads", c.newDownload, false},
		{"GET", "downloads/{ticket}/result", c.downloadResult, false},
	} {
		h := r.h
		if r.reads { // after sign-in: an anonymous request never holds a slot
			h = c.heldCall(h)
		}
		mux.HandleFunc(r.method+" "+Prefix+r.path, c.counted(r.path, c.user(h)))
	}
	// The archive itself is fetched by the browser's own download (no Authorization
	// header): the ticket, random, single-use and short-lived, stands for the sign-in.
	mux.HandleFunc("GET "+Prefix+"downloads/{ticket}", c.counted("downloads/{ticket}", c.held(c.streaming, c.serveDownload)))
}

// held serves h only while it holds one of slots (503 when none frees in time).
func (c *Console) held(slots chan struct{}, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		release, ok := c.slot(w, r, slots)
		if !ok {
			return
		}
		defer release()
		h(w, r)
	}
}

// heldCall is held for a signed-in evidence read.
func (c *Console) heldCall(h func(w http.ResponseWriter, r *http.Request, k call)) func(w http.ResponseWriter, r *http.Request, k call) {
	return func(w http.ResponseWriter, r *http.Request, k call) {
		c.held(c.reading, func(w http.ResponseWriter, r *http.Request) { h(w, r, k) })(w, r)
	}
}

// codeWriter remembers the status code written.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// counted counts a route's requests by status code.
func (c *Console) counted(route string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		cw := &codeWriter{ResponseWriter: w}
		defer func() {
			if c.Metrics != nil {
				code := cw.code
				if code == 0 {
					code = http.StatusOK
				}
				c.Metrics.Requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
			}
		}()
		h(cw, r)
	}
}

// call is one signed-in request: the user, their clients, and the namespace and pod asked.
type call struct {
	user   shell.User
	client kubernetes.Interface
	exec   exec.Executor
	// evidence reads collections with the user's clients only.
	evidence *evidence.Reader
}

func (c *Console) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// user wraps a handler: Origin, sign-in, the user's own clients.
func (c *Console) user(h func(w http.ResponseWriter, r *http.Request, k call)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if !c.OriginAllowed(r) {
			writeError(w, http.StatusForbidden, "origin not allowed")
			return
		}
		u, token, code, err := c.Authenticate(r)
		if err != nil {
			writeError(w, code, err.Error())
			return
		}
		client, ex, err := c.Clients(token)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		ns := r.URL.Query().Get("namespace")
		if ns != "" && len(validation.IsDNS1123Label(ns)) > 0 {
			writeError(w, http.StatusBadRequest, "invalid namespace "+strconv.Quote(ns))
			return
		}
		if pod := r.URL.Query().Get("pod"); pod != "" && len(validation.IsDNS1123Subdomain(pod)) > 0 {
			writeError(w, http.StatusBadRequest, "invalid pod name "+strconv.Quote(pod))
			return
		}
		manifestMax, recordMax := c.limits()
		ev := &evidence.Reader{Client: client, Exec: ex, Namespace: ns,
			AnalysisNamespace: c.Destination.Namespace, AnalysisSelector: c.Destination.Selector, Dir: c.Destination.Dir,
			Keys: c.verifyKeys, MaxManifestBytes: manifestMax, MaxRecordBytes: recordMax,
			SpoolDir: c.SpoolDir, SpoolMaxBytes: downloadSpool}
		ctx, cancel := context.WithTimeout(r.Context(), apiTimeout)
		defer cancel()
		h(w, r.WithContext(ctx), call{user: u, client: client, exec: ex, evidence: ev})
	}
}

// mayRead refuses a user who may not get pods in the namespace: their collections are
// shown to those who may read the pods they came from (the pod itself may be gone).
func (c *Console) mayRead(ctx context.Context, k call, ns, pod string) error {
	if ns == "" || pod == "" {
		return &httpError{http.StatusBadRequest, "namespace and pod are required"}
	}
	_, err := k.client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// readable reads namespace, pod and id from the query and refuses (answering w) a user who
// may not read the pod's collections.
func (c *Console) readable(w http.ResponseWriter, r *http.Request, k call) (ns, pod, id string, ok bool) {
	q := r.URL.Query()
	ns, pod, id = q.Get("namespace"), q.Get("pod"), q.Get("id")
	if id != "" && layout.ValidCollectionID(id) != nil { // one id, never a path that names another namespace
		writeError(w, http.StatusBadRequest, "invalid collection id "+strconv.Quote(id))
		return ns, pod, id, false
	}
	if err := c.mayRead(r.Context(), k, ns, pod); err != nil {
		writeAPIError(w, err)
		return ns, pod, id, false
	}
	return ns, pod, id, true
}

// PodView is one pod in the pods list: its phase and containers, its request and its
// podcopy status (nil without one).
type PodView struct {
	Name       string         `json:"name"`
	Phase      string         `json:"phase"`
	Node       string         `json:"node,omitempty"`
	Containers []string       `json:"containers"`
	Request    string         `json:"request,omitempty"`
	Mode       string         `json:"mode,omitempty"`
	Status     *status.Status `json:"status,omitempty"`
}

func (c *Console) namespaces(w http.ResponseWriter, r *http.Request, k call) {
	list, err := k.client.CoreV1().Namespaces().List(r.Context(), metav1.ListOptions{})
	if err != nil {
		// Many users may not list namespaces: the page then asks for one by name.
		writeJSON(w, map[string]any{"namespaces": []string{}, "message": err.Error()})
		return
	}
	names := []string{}
	for _, n := range list.Items {
		names = append(names, n.Name)
	}
	writeJSON(w, map[string]any{"namespaces": names})
}

func (c *Console) pods(w http.ResponseWriter, r *http.Request, k call) {
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		writeError(w, http.StatusBadRequest, "namespace is required")
		return
	}
	list, err := k.client.CoreV1().Pods(ns).List(r.Context(), metav1.ListOptions{})
	if err != nil {
		writeAPIError(w, err)
		return
	}
	out := []PodView{}
	for i := range list.Items {
		p := &list.Items[i]
		v := PodView{Name: p.Name, Phase: string(p.Status.Phase), Node: p.Spec.NodeName,
			Request: p.Annotations[request.AnnotationCollect], Mode: p.Annotations[request.AnnotationMode]}
		for _, ctr := range p.Spec.Containers {
			v.Containers = append(v.Containers, ctr.Name)
		}
		if st, ok := status.Get(p); ok {
			v.Status = &st
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b PodView) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, out)
}

// CollectionView is one collection in a pod's list, with its signature state and
// retention.
type CollectionView struct {
	evidence.Row
	Signature string `json:"signature"`
	Problem   string `json:"problem,omitempty"`
	Retention string `json:"retention,omitempty"`
}

func (c *Console) collections(w http.ResponseWriter, r *http.Request, k call) {
	_, pod, _, ok := c.readable(w, r, k)
	if !ok {
		return
	}
	listed, err := k.evidence.InspectAll(r.Context(), pod, maxCollections)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	out := []CollectionView{}
	for _, l := range listed {
		in := l.Inspection
		v := CollectionView{Row: l.Row, Signature: in.Signature, Problem: in.Problem, Retention: c.retention(l.Row.Started, nil)}
		if in.Manifest != nil && in.Signature != verify.Failed {
			v.Retention = c.retention(l.Row.Started, in.Manifest.Destination.Retention)
		}
		out = append(out, v)
	}
	writeJSON(w, out)
}

// retention says how long a collection is kept: the bucket's Object Lock, and the analysis
// pod's retention (destination.retention).
func (c *Console) retention(started string, lock *manifest.Retention) string {
	var parts []string
	if lock != nil {
		if lock.Mode != "" {
			parts = append(parts, "bucket: "+lock.Mode+" until "+lock.RetainUntil)
		}
		if lock.LegalHold {
			parts = append(parts, "bucket: legal hold")
		}
	}
	ret := c.Destination.Retention
	if ret.MaxAge > 0 {
		if t, err := time.Parse(time.RFC3339, started); err == nil {
			parts = append(parts, "analysis pod: until "+t.Add(ret.MaxAge).UTC().Format(time.RFC3339))
		}
	}
	if ret.KeepLast > 0 {
		parts = append(parts, fmt.Sprintf("analysis pod: the latest %d of the pod", ret.KeepLast))
	}
	if len(parts) == 0 {
		return "kept until removed"
	}
	return strings.Join(parts, "; ")
}

// Detail is one collection: what Inspect read, and its retention.
type Detail struct {
	evidence.Inspection
	Retention string `json:"retention"`
}

func (c *Console) collection(w http.ResponseWriter, r *http.Request, k call) {
	_, pod, id, ok := c.readable(w, r, k)
	if !ok {
		return
	}
	in, err := k.evidence.Inspect(r.Context(), pod, id)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	d := Detail{Inspection: in}
	if in.Manifest != nil {
		d.Retention = c.retention(in.Manifest.StartTime, in.Manifest.Destination.Retention)
	}
	writeJSON(w, d)
}

func (c *Console) preview(w http.ResponseWriter, r *http.Request, k call) {
	_, pod, id, ok := c.readable(w, r, k)
	if !ok {
		return
	}
	p, err := k.evidence.Preview(r.Context(), pod, id, r.URL.Query().Get("file"))
	if err != nil {
		writeAPIError(w, err)
		return
	}
	writeJSON(w, p)
}

func (c *Console) verify(w http.ResponseWriter, r *http.Request, k call) {
	_, pod, id, ok := c.readable(w, r, k)
	if !ok {
		return
	}
	res, err := k.evidence.Verify(r.Context(), pod, id)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	writeJSON(w, resultView(res))
}

// CollectRequest is what the page asks to collect.
type CollectRequest struct {
	Namespace string   `json:"namespace"`
	Pod       string   `json:"pod"`
	Paths     []string `json:"paths"`
	Container string   `json:"container,omitempty"`
	Follow    bool     `json:"follow,omitempty"`
	Interval  string   `json:"interval,omitempty"`
}

func (c *Console) collect(w http.ResponseWriter, r *http.Request, k call) {
	var req CollectRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "the request is not a collect request: "+err.Error())
		return
	}
	if len(validation.IsDNS1123Label(req.Namespace)) > 0 || len(validation.IsDNS1123Subdomain(req.Pod)) > 0 {
		writeError(w, http.StatusBadRequest, "invalid namespace or pod")
		return
	}
	if len(req.Paths) == 0 {
		writeError(w, http.StatusBadRequest, "no paths: give at least one absolute path")
		return
	}
	for _, p := range req.Paths {
		if p == "" || strings.Contains(p, ",") {
			writeError(w, http.StatusBadRequest, "path "+strconv.Quote(p)+": one absolute path per entry, without commas")
			return
		}
	}
	// The request is the user's own annotation patch: admission checks their exec right and
	// records them as requestedBy; the agent parses and checks the paths (its status says
	// what it refused).
	id, err := plugin.Ask(r.Context(), k.client, req.Namespace, req.Pod, req.Paths, req.Container, req.Follow, req.Interval)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	c.Log.Info("collection requested from the console", "user", k.user.Name, "namespace", req.Namespace, "pod", req.Pod, "request", id)
	writeJSON(w, map[string]string{"request": id})
}

func (c *Console) stop(w http.ResponseWriter, r *http.Request, k call) {
	q := r.URL.Query()
	if q.Get("namespace") == "" || q.Get("pod") == "" {
		writeError(w, http.StatusBadRequest, "namespace and pod are required")
		return
	}
	if err := plugin.Stop(r.Context(), k.client, q.Get("namespace"), q.Get("pod")); err != nil {
		writeAPIError(w, err)
		return
	}
	c.Log.Info("request removed from the console", "user", k.user.Name, "namespace", q.Get("namespace"), "pod", q.Get("pod"))
	writeJSON(w, map[string]string{"stopped": q.Get("pod")})
}

// ResultView is a verification or download result as the page shows it.
type ResultView struct {
	evidence.Result
	// Verified is true when every file matched.
	Verified bool `json:"verified"`
}

func resultView(res evidence.Result) ResultView {
	return ResultView{Result: res, Verified: res.OK()}
}

func (c *Console) newDownload(w http.ResponseWriter, r *http.Request, k call) {
	ns, pod, id, ok := c.readable(w, r, k)
	if !ok {
		return
	}
	if id == "" {
		writeError(w, http.StatusBadRequest, "id is required")
		return
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	ticket := base64.RawURLEncoding.EncodeToString(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.prune()
	held := 0
	for _, d := range c.downloads {
		if d.user == k.user.Name {
			held++
		}
	}
	if held >= maxTickets {
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("you hold %d downloads; wait for one to finish", held))
		return
	}
	if c.downloads == nil {
		c.downloads = map[string]*download{}
	}
	// The ticket keeps the user's token out of the URL: the download runs with the token
	// of the request that made the ticket, held only in memory.
	c.downloads[ticket] = &download{user: k.user.Name, namespace: ns, pod: pod, id: id, created: c.now(), state: "pending", reader: k.evidence}
	writeJSON(w, map[string]string{"ticket": ticket, "url": strings.TrimPrefix(Prefix, "/") + "downloads/" + ticket})
}

// prune forgets unused tickets after ticketTTL and results after resultTTL (c.mu held).
func (c *Console) prune() {
	now := c.now()
	for t, d := range c.downloads {
		if (d.state == "pending" && now.Sub(d.created) > ticketTTL) || (d.state == "done" && now.Sub(d.ended) > resultTTL) {
			delete(c.downloads, t)
		}
	}
}

func (c *Console) serveDownload(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ticket := r.PathValue("ticket")
	c.mu.Lock()
	c.prune()
	d, ok := c.downloads[ticket]
	var o *evidence.Reader
	if ok && d.state == "pending" { // single use
		d.state, o, d.reader = "streaming", d.reader, nil
	}
	c.mu.Unlock()
	if o == nil {
		writeError(w, http.StatusNotFound, "no such download: tickets are single-use and expire after a minute")
		return
	}
	name := fmt.Sprintf("%s_%s_%s.tar", d.namespace, d.pod, d.id)
	res, err := o.Download(r.Context(), d.pod, d.id, w, func() {
		w.Header().Set("Content-Type", "application/x-tar")
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
		w.Header().Set("X-Content-Type-Options", "nosniff")
	})
	c.mu.Lock()
	d.state, d.ended = "done", c.now()
	if err != nil {
		d.err = err.Error()
	} else {
		d.result = &res
	}
	c.mu.Unlock()
	if c.Metrics != nil {
		result := "verified"
		switch {
		case err != nil:
			result = "error"
		case !resultView(res).Verified:
			result = "failed"
		}
		c.Metrics.Downloads.WithLabelValues(result).Inc()
	}
	c.Log.Info("collection downloaded from the console", "user", d.user, "namespace", d.namespace, "pod", d.pod, "collection", d.id,
		"files", res.Files, "bytes", res.Bytes, "verified", err == nil && resultView(res).Verified, "error", d.err)
	if err != nil {
		if w.Header().Get("Content-Type") == "application/x-tar" {
			// Bytes went out: end the response broken, so the browser marks the download
			// failed instead of saving a short archive as complete.
			panic(http.ErrAbortHandler)
		}
		writeAPIError(w, err)
	}
}

func (c *Console) downloadResult(w http.ResponseWriter, r *http.Request, k call) {
	c.mu.Lock()
	d, ok := c.downloads[r.PathValue("ticket")]
	var view map[string]any
	if ok && d.user == k.user.Name {
		view = map[string]any{"state": d.state, "collection": d.id}
		if d.result != nil {
			view["result"] = resultView(*d.result)
		}
		if d.err != "" {
			view["error"] = d.err
		}
	}
	c.mu.Unlock()
	if view == nil {
		writeError(w, http.StatusNotFound, "no such download")
		return
	}
	writeJSON(w, view)
}

// httpError is an error with its HTTP status.
type httpError struct {
	code int
	msg  string
}

func (e *httpError) Error() string { return e.msg }

// writeAPIError answers with the API server's own status for its errors (403 says what the
// user may not do), 400 for the console's own checks, else 502.
func writeAPIError(w http.ResponseWriter, err error) {
	var he *httpError
	var st apierrors.APIStatus
	switch {
	case errors.As(err, &he):
		writeError(w, he.code, he.msg)
	case errors.As(err, &st) && st.Status().Code >= 400:
		writeError(w, int(st.Status().Code), err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, err.Error())
	default:
		writeError(w, http.StatusBadGateway, err.Error())
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": status.Printable(msg)})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_ = json.NewEncoder(w).Encode(v)
}
