// Command bundle-bench measures `prefetch bundle` and `prefetch once
// -bundle` against `docker save` and `docker load` of the same images, in
// the same run, on a private dockerd (internal/testbed), and the peak RSS
// of prefetch writing and loading a large bundle and a small one. The
// images' layers are random bytes made on the fly (incompressible, never
// stored in the repository). It prints Markdown on stdout, progress on
// stderr.
//
// Run it through bench/bundle.sh, which builds the prefetch binary. It
// needs root (dockerd does) and docker.io. It stops by itself (-timeout) and
// on SIGINT/SIGTERM, and removes everything it started.
package main

import (
	"archive/tar"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/client"
	"github.com/nomad-prefetch/nomad-prefetch/bench/internal/benchkit"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

type options struct {
	prefetch, docker string
	images           int
	size, small      int64
	reps             int
	timeout          time.Duration
}

func main() {
	var o options
	var sizeMiB, smallKiB int
	flag.StringVar(&o.prefetch, "prefetch", "", "the prefetch binary to measure (required)")
	flag.StringVar(&o.docker, "docker", "docker", "the docker CLI for the baseline")
	flag.IntVar(&o.images, "images", 3, "images in each bundle")
	flag.IntVar(&sizeMiB, "size", 400, "MiB of random layer per image of the large bundle")
	flag.IntVar(&smallKiB, "small", 256, "KiB of random layer per image of the small bundle (the RSS baseline)")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of each tool, alternating which goes first")
	flag.DurationVar(&o.timeout, "timeout", 9*time.Minute, "stop after this long, whatever is left")
	flag.Parse()
	o.size, o.small = int64(sizeMiB)<<20, int64(smallKiB)<<10
	if o.prefetch == "" {
		fmt.Fprintln(os.Stderr, "bundle-bench: -prefetch is required")
		os.Exit(2)
	}
	benchkit.Main("bundle-bench", o.timeout, func(ctx context.Context) error { return run(ctx, o) })
}

var logf = benchkit.Progress

// set is a group of images, their config and where their bundles go.
type set struct {
	name     string
	cfg      string
	expected []string
	ids      []string
	bytes    int64
}

func run(ctx context.Context, o options) error {
	bed, err := testbed.Start()
	if err != nil {
		return err
	}
	defer bed.Close()
	work := filepath.Join(bed.Dir, "bench")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	big, err := makeSet(ctx, bed, work, "large", o.images, o.size)
	if err != nil {
		return err
	}
	small, err := makeSet(ctx, bed, work, "small", o.images, o.small)
	if err != nil {
		return err
	}
	env := append(os.Environ(), "DOCKER_HOST="+bed.Host)
	r := &results{}
	for rep := range o.reps {
		if err := r.rep(ctx, o, bed, env, work, big, rep); err != nil {
			return err
		}
	}
	// RSS baseline: the same commands on a bundle of small images.
	smallBundle := filepath.Join(work, "small.tar")
	if _, err := timed(ctx, env, o.prefetch, "bundle", "-config", small.cfg, "-o", smallBundle); err != nil {
		return err
	}
	r.smallWriteRSS = lastRSS
	if err := removeAll(ctx, bed, small); err != nil {
		return err
	}
	if _, err := timed(ctx, env, o.prefetch, "once", "-bundle", smallBundle); err != nil {
		return err
	}
	r.smallLoadRSS = lastRSS
	r.print(o, big)
	return nil
}

// makeSet imports n images of size random bytes each, tagged as the
// expected references of a config whose registry is down (so that the
// per-image step finds each one present and pulls nothing).
func makeSet(ctx context.Context, bed *testbed.Bed, dir, name string, n int, size int64) (*set, error) {
	s := &set{name: name}
	cfg := fmt.Sprintf("docker {\n  host = %q\n}\nconcurrency = 4\n", bed.Host)
	for i := range n {
		ref := fmt.Sprintf("127.0.0.1:9/bench/%s-%d:1", name, i)
		logf("importing %s (%d KiB of random bytes)", ref, size>>10)
		id, err := importRandom(ctx, bed, ref, size, uint64(i)+uint64(size))
		if err != nil {
			return nil, err
		}
		s.expected, s.ids = append(s.expected, ref), append(s.ids, id)
		s.bytes += size
		cfg += fmt.Sprintf("image %q {\n  expected = %q\n}\n", fmt.Sprintf("%s-%d", name, i), ref)
	}
	s.cfg = filepath.Join(dir, name+".hcl")
	return s, os.WriteFile(s.cfg, []byte(cfg), 0o644)
}

// importRandom imports an image whose one layer holds one file of size
// random bytes, streamed from a generator: nothing is stored first.
func importRandom(ctx context.Context, bed *testbed.Bed, ref string, size int64, seed uint64) (string, error) {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: "random", Mode: 0o644, Size: size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg})
		if err == nil {
			var key [32]byte
			key[0], key[1] = byte(seed), byte(seed>>8)
			_, err = io.CopyN(tw, rand.NewChaCha8(key), size)
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	resp, err := bed.Client.ImageImport(ctx, client.ImageImportSource{Source: pr, SourceName: "-"}, ref, client.ImageImportOptions{})
	if err != nil {
		return "", err
	}
	defer resp.Close()
	if _, err := io.Copy(io.Discard, resp); err != nil {
		return "", err
	}
	im, err := bed.Client.ImageInspect(ctx, ref)
	if err != nil {
		return "", err
	}
	return im.ID, nil
}

func removeAll(ctx context.Context, bed *testbed.Bed, s *set) error {
	return bed.Remove(ctx, s.ids...)
}

// tagAll tags each image as expected again, by ID (after docker load,
// which tags nothing of a save by ID).
func tagAll(ctx context.Context, bed *testbed.Bed, s *set) error {
	for i, id := range s.ids {
		if _, err := bed.Client.ImageTag(ctx, client.ImageTagOptions{Source: id, Target: s.expected[i]}); err != nil {
			return err
		}
	}
	return nil
}

// lastRSS is the peak RSS, in KiB, of the last command timed.
var lastRSS int64

// timed runs a command and returns how long it took.
func timed(ctx context.Context, env []string, name string, args ...string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		lastRSS = ru.Maxrss
	}
	return d, nil
}

type results struct {
	save, bundle, dload, pload []time.Duration
	writeRSS, loadRSS          []int64
	smallWriteRSS              int64
	smallLoadRSS               int64
	saveBytes, bundleBytes     int64
}

// rep measures each tool once, writing then loading, in the order the
// repetition's parity says.
func (r *results) rep(ctx context.Context, o options, bed *testbed.Bed, env []string, work string, s *set, rep int) error {
	saved, bundled := filepath.Join(work, "saved.tar"), filepath.Join(work, "bundle.tar")
	write := []func() error{
		func() error {
			os.Remove(saved)
			d, err := timed(ctx, env, o.docker, append([]string{"save", "-o", saved}, s.ids...)...)
			r.save = append(r.save, d)
			logf("rep %d: docker save %s", rep+1, d.Round(time.Millisecond))
			return err
		},
		func() error {
			os.Remove(bundled)
			d, err := timed(ctx, env, o.prefetch, "bundle", "-config", s.cfg, "-o", bundled)
			r.bundle, r.writeRSS = append(r.bundle, d), append(r.writeRSS, lastRSS)
			logf("rep %d: prefetch bundle %s, max RSS %d MiB", rep+1, d.Round(time.Millisecond), lastRSS>>10)
			return err
		},
	}
	load := []func() error{
		func() error {
			if err := removeAll(ctx, bed, s); err != nil {
				return err
			}
			d, err := timed(ctx, env, o.docker, "load", "-q", "-i", saved)
			r.dload = append(r.dload, d)
			logf("rep %d: docker load %s", rep+1, d.Round(time.Millisecond))
			if err != nil {
				return err
			}
			return tagAll(ctx, bed, s)
		},
		func() error {
			if err := removeAll(ctx, bed, s); err != nil {
				return err
			}
			d, err := timed(ctx, env, o.prefetch, "once", "-bundle", bundled)
			r.pload, r.loadRSS = append(r.pload, d), append(r.loadRSS, lastRSS)
			logf("rep %d: prefetch once -bundle %s, max RSS %d MiB", rep+1, d.Round(time.Millisecond), lastRSS>>10)
			return err
		},
	}
	if rep%2 == 1 {
		slices.Reverse(write)
		slices.Reverse(load)
	}
	for _, f := range slices.Concat(write, load) {
		if err := f(); err != nil {
			return err
		}
	}
	for _, p := range []struct {
		path string
		n    *int64
	}{{saved, &r.saveBytes}, {bundled, &r.bundleBytes}} {
		fi, err := os.Stat(p.path)
		if err != nil {
			return errors.New("no " + p.path)
		}
		*p.n = fi.Size()
	}
	return nil
}

func median[T int64 | time.Duration](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

func (r *results) print(o options, big *set) {
	ms := func(v []time.Duration) string {
		var out []string
		for _, d := range v {
			out = append(out, fmt.Sprintf("%.2f", d.Seconds()))
		}
		return strings.Join(out, ", ")
	}
	save, bundle, dload, pload := median(r.save), median(r.bundle), median(r.dload), median(r.pload)
	fmt.Printf("%d images of %d MiB of random bytes (one layer each); bundle %d bytes, docker save %d bytes; %d repetitions, alternating which tool goes first.\n\n",
		o.images, o.size>>20, r.bundleBytes, r.saveBytes, o.reps)
	fmt.Println("| | baseline (median) | prefetch (median) | ratio | goal | runs (s): baseline; prefetch |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	fmt.Printf("| write | `docker save -o` %.2f s (%.0f MiB/s) | `prefetch bundle` %.2f s (%.0f MiB/s) | %.3f | ≤ 1.1 | %s; %s |\n",
		save.Seconds(), mibps(r.saveBytes, save), bundle.Seconds(), mibps(r.bundleBytes, bundle), bundle.Seconds()/save.Seconds(), ms(r.save), ms(r.bundle))
	fmt.Printf("| load | `docker load -i` %.2f s (%.0f MiB/s) | `prefetch once -bundle` %.2f s (%.0f MiB/s) | %.3f | ≤ 1.1 | %s; %s |\n\n",
		dload.Seconds(), mibps(r.saveBytes, dload), pload.Seconds(), mibps(r.bundleBytes, pload), pload.Seconds()/dload.Seconds(), ms(r.dload), ms(r.pload))
	fmt.Println("| peak RSS of prefetch | large bundle | small bundle |")
	fmt.Println("| --- | --- | --- |")
	fmt.Printf("| `prefetch bundle` | %.1f MiB (%s) | %.1f MiB (%d × %d KiB) |\n", float64(median(r.writeRSS))/1024, FormatMiB(big.bytes), float64(r.smallWriteRSS)/1024, o.images, o.small>>10)
	fmt.Printf("| `prefetch once -bundle` | %.1f MiB | %.1f MiB |\n", float64(median(r.loadRSS))/1024, float64(r.smallLoadRSS)/1024)
}

// FormatMiB writes n bytes in MiB.
func FormatMiB(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }
