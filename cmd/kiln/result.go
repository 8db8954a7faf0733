package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kiln-build/kiln/internal/build"
)

// maxResultMessage keeps a result under the kubelet's 4 KiB termination message limit.
const maxResultMessage = 2048

// buildResult is api/v1alpha1.BuildResult as JSON, written here without the Kubernetes
// libraries, which kiln build does not link (result_test.go checks the two agree).
type buildResult struct {
	Image   string      `json:"image,omitempty"`
	Digest  string      `json:"digest,omitempty"`
	Stages  []stageInfo `json:"stages,omitempty"`
	Reason  string      `json:"reason,omitempty"`
	Message string      `json:"message,omitempty"`
}

// stageInfo is api/v1alpha1.StageInfo as JSON.
type stageInfo struct {
	Name                 string     `json:"name"`
	StartTime            *time.Time `json:"startTime,omitempty"`
	DurationMilliseconds int64      `json:"durationMilliseconds,omitempty"`
}

// The failure reasons kiln build reports (api/v1alpha1's BuildReason values).
const (
	reasonBuildFailed = "BuildFailed"
	reasonPushFailed  = "PushFailed"
)

// writeResult writes the outcome of a build as a BuildResult: what the controller reads from
// a build pod's termination message.
func writeResult(path string, req build.Request, res *build.Result, buildErr error) error {
	var r buildResult
	if res != nil {
		if refs := pushed(req); len(refs) > 0 {
			r.Image = refs[0]
		}
		r.Digest = res.Digest.String()
		for _, s := range res.Stages {
			start := s.Start.UTC().Truncate(time.Second)
			r.Stages = append(r.Stages, stageInfo{Name: s.Name, StartTime: &start, DurationMilliseconds: s.Duration.Milliseconds()})
		}
	}
	if buildErr != nil {
		r.Reason = reasonBuildFailed
		var stageErr *build.StageError
		if errors.As(buildErr, &stageErr) && stageErr.Stage == build.StagePush {
			r.Reason = reasonPushFailed
		}
		r.Message = buildErr.Error()
		if len(r.Message) > maxResultMessage {
			r.Message = r.Message[:maxResultMessage] + "..."
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing --result-file: %w", err)
	}
	return nil
}

// pushed are the references a build pushes to, in order.
func pushed(req build.Request) []string {
	var refs []string
	if req.Push {
		refs = append(refs, req.Tags...)
	}
	return append(refs, req.Destinations...)
}
