package agent

// Publishing: the snapshot status, metrics and the health check read.

func (r *loopRun) publish() {
	s := Snapshot{Config: r.path, ConfigLoaded: r.loaded, ConfigError: r.cfgErr, DockerError: r.dockerErr, Images: make([]ImageStatus, 0, len(r.order))}
	if r.dockerErr != "" {
		t := r.dockerSince
		s.DockerDownSince = &t
	}
	if r.discovering != nil {
		st := r.discovered.Status
		s.Nomad = &st
	}
	s.Foreground = r.foregroundStatus()
	for _, key := range r.order {
		e := r.entries[key]
		img := ImageStatus{
			Name: e.img.Name, Expected: e.img.Expected, State: e.phase.String(), ImageID: e.imageID,
			Source: e.source, Result: string(e.result), Attempts: e.fails.Attempts(), LastError: e.lastErr,
			Origin: e.origin, UsedBy: e.usedBy,
		}
		if e.retrying && e.phase != phasePulling {
			t := e.due
			img.NextRetry = &t
		}
		if !e.lastOK.IsZero() {
			t := e.lastOK
			img.LastSuccess = &t
		}
		if e.fails.Down() {
			t := e.fails.Since()
			img.FailingSince = &t
		}
		s.Images = append(s.Images, img)
	}
	r.loop.snap.Store(&s)
}
