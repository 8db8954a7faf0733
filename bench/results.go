package main

// results is everything one benchmark measured; results.json is this value.
type results struct {
	Meta         meta              `json:"meta"`
	Measurements []measurement     `json:"measurements"`
	CacheLookup  []cacheLookupRun  `json:"cacheLookup,omitempty"`
	GoCacheMount []goCacheMountRun `json:"goCacheMount,omitempty"`
	// Notes are things the reader must know: skipped workloads, failed warm-ups.
	Notes []string `json:"notes,omitempty"`
}

// meta describes the machine and the command.
type meta struct {
	Date           string   `json:"date"`
	Cores          int      `json:"cores"`
	CPU            string   `json:"cpu"`
	MemoryBytes    int64    `json:"memoryBytes"`
	Kernel         string   `json:"kernel"`
	KilnCommit     string   `json:"kilnCommit"`
	BuildahVersion string   `json:"buildahVersion"`
	CommandLine    string   `json:"commandLine"`
	Runs           int      `json:"runs"`
	Builders       []string `json:"builders"`
	Workloads      []string `json:"workloads"`
	User           string   `json:"user"`
	WorkDir        string   `json:"workDir"`
	// FreshFS says each run had a new filesystem of its own (-fresh-fs).
	FreshFS bool `json:"freshFS,omitempty"`
	// KilnCompression is kiln's --compression when the build compressed its layers, "" for
	// kiln's default (an image that stays in the store is not compressed).
	KilnCompression string `json:"kilnCompression,omitempty"`
}

// measurement is one build of one workload by one builder: the rows of the
// main tables. Optional values are nil when they do not apply or could not
// be measured.
type measurement struct {
	Workload string `json:"workload"`
	Builder  string `json:"builder"`
	Run      int    `json:"run"`
	// Base is the image the workload starts FROM.
	Base string `json:"base"`
	// Baseline is set on the builds that only pull their base image.
	Baseline bool `json:"baseline,omitempty"`
	// WallSeconds is the build's wall time, base image pull included.
	WallSeconds float64 `json:"wallSeconds"`
	// RunSeconds is the time inside RUN processes (kiln only).
	RunSeconds *float64 `json:"runSeconds,omitempty"`
	// OverheadSeconds is WallSeconds - RunSeconds: kiln's own time.
	OverheadSeconds *float64 `json:"overheadSeconds,omitempty"`
	// CommitSeconds is the part of the overhead spent committing layers (writing each
	// step's diff as a compressed blob), and LastCommitSeconds the last step's (kiln only).
	CommitSeconds     *float64 `json:"commitSeconds,omitempty"`
	LastCommitSeconds *float64 `json:"lastCommitSeconds,omitempty"`
	// PeakRSSBytes is the highest summed VmRSS of the builder's process tree.
	PeakRSSBytes int64 `json:"peakRssBytes"`
	// PeakOwnRSSBytes is the same over the processes running the builder's own binary.
	PeakOwnRSSBytes int64 `json:"peakOwnRssBytes,omitempty"`
	// DiskBytes is the store's disk use after the build (du: st_blocks, hard links once).
	DiskBytes *int64 `json:"diskBytes,omitempty"`
	// CompressedBytes and UncompressedBytes sum the image's layers.
	CompressedBytes   *int64 `json:"compressedBytes,omitempty"`
	UncompressedBytes *int64 `json:"uncompressedBytes,omitempty"`
	// FloorZstdSeconds and FloorPigzSeconds time tar | zstd -T0 -1 and
	// tar | pigz over the layers the build added (kiln's, standard workloads).
	FloorZstdSeconds *float64 `json:"floorZstdSeconds,omitempty"`
	FloorPigzSeconds *float64 `json:"floorPigzSeconds,omitempty"`
	// PrepSeconds is the wall time of the untimed build that prepared this
	// one (rebuild workloads).
	PrepSeconds *float64 `json:"prepSeconds,omitempty"`
	Error       string   `json:"error,omitempty"`
	Warnings    []string `json:"warnings,omitempty"`
	Log         string   `json:"log,omitempty"`
}

// cacheLookupRun is one fully cached rebuild from a registry cache into an
// empty store (kiln only).
type cacheLookupRun struct {
	Run         int     `json:"run"`
	WallSeconds float64 `json:"wallSeconds"`
	// Requests is how many HTTP requests reached the registry during the
	// rebuild, base image included; ByKind splits them by method, endpoint
	// and repository.
	Requests   int            `json:"requests"`
	ByKind     map[string]int `json:"byKind"`
	RunSeconds *float64       `json:"runSeconds,omitempty"`
	// PopulateSeconds is the wall time of the build that exported the cache.
	PopulateSeconds float64 `json:"populateSeconds"`
	Error           string  `json:"error,omitempty"`
	Log             string  `json:"log,omitempty"`
}

// goCacheMountRun is two builds of the go-cache-mount workload in one
// store, main.go changed between them.
type goCacheMountRun struct {
	Builder          string  `json:"builder"`
	Run              int     `json:"run"`
	FirstWallSeconds float64 `json:"firstWallSeconds"`
	// SecondWallSeconds is the rebuild's wall time.
	SecondWallSeconds float64 `json:"secondWallSeconds"`
	// FirstGoBuildSeconds and SecondGoBuildSeconds are the `go build` step's
	// own time, printed by the step.
	FirstGoBuildSeconds  *float64 `json:"firstGoBuildSeconds,omitempty"`
	SecondGoBuildSeconds *float64 `json:"secondGoBuildSeconds,omitempty"`
	Error                string   `json:"error,omitempty"`
	Log                  string   `json:"log,omitempty"`
}

func (r *results) add(ms ...measurement) { r.Measurements = append(r.Measurements, ms...) }

func ptr[T any](v T) *T { return &v }
