package agent

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
)

// Once fetches every image, at most concurrency at a time, logs one line per
// image, and returns the results in the order of images.
func (f *Fetcher) Once(ctx context.Context, images []config.Image, concurrency int) []Result {
	results := make([]Result, len(images))
	sem := make(chan struct{}, max(concurrency, 1))
	var wg sync.WaitGroup
	var done atomic.Int64
	for i, img := range images {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i] = Result{Image: img, Outcome: Failed, Err: context.Cause(ctx)}
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			results[i] = f.Fetch(ctx, img)
			f.report(results[i], done.Add(1), len(images))
		})
	}
	wg.Wait()
	return results
}

// report logs r, the n-th result of total.
func (f *Fetcher) report(r Result, n int64, total int) {
	attrs := []any{
		"image", r.Image.Expected,
		"name", r.Image.Name,
		"result", string(r.Outcome),
		"duration", r.Duration.Round(time.Millisecond).String(),
		"n", n, "of", total,
	}
	if r.Source != "" {
		attrs = append(attrs, "source", r.Source)
	}
	if r.ImageID != "" {
		attrs = append(attrs, "image_id", r.ImageID)
	}
	switch r.Outcome {
	case Failed:
		f.Log.Error("image not available", append(attrs, "error", r.Err.Error())...)
	case Stale:
		f.Log.Warn("image present but not refreshed", append(attrs, "error", r.Err.Error())...)
	default:
		f.Log.Info("image ready", attrs...)
	}
}
