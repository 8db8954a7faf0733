package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kilnv1 "github.com/kiln-build/kiln/api/v1alpha1"
	"github.com/kiln-build/kiln/internal/build"
)

// maxResultMessage keeps a result under the kubelet's 4 KiB termination message limit.
const maxResultMessage = 2048

// writeResult writes the outcome of a build as a BuildResult: what the controller reads from
// a build pod's termination message.
func writeResult(path string, req build.Request, res *build.Result, buildErr error) error {
	var r kilnv1.BuildResult
	if res != nil {
		if refs := pushed(req); len(refs) > 0 {
			r.Image = refs[0]
		}
		r.Digest = res.Digest.String()
		for _, s := range res.Stages {
			start := metav1.NewTime(s.Start)
			r.Stages = append(r.Stages, kilnv1.StageInfo{Name: kilnv1.StageName(s.Name), StartTime: &start, DurationMilliseconds: s.Duration.Milliseconds()})
		}
	}
	if buildErr != nil {
		r.Reason = kilnv1.ReasonBuildFailed
		var stageErr *build.StageError
		if errors.As(buildErr, &stageErr) && stageErr.Stage == build.StagePush {
			r.Reason = kilnv1.ReasonPushFailed
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
