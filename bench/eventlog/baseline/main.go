// Command baseline is the usual way to log Nomad's event stream, for
// comparison in bench/eventlog.sh: api.EventStream, then json.Marshal of each
// api.Event to a buffered stdout, flushed after each frame. It has no
// reconnect, so it stops when the stream ends.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/nomad/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	topics := map[api.Topic][]string{api.TopicJob: {"*"}, api.TopicAllocation: {"*"}}
	ch, err := client.EventStream().Stream(ctx, topics, 0, &api.QueryOptions{Namespace: "*"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	for evs := range ch {
		if evs.Err != nil {
			if !errors.Is(evs.Err, io.EOF) {
				fmt.Fprintln(os.Stderr, evs.Err)
			}
			break
		}
		for _, e := range evs.Events {
			b, err := json.Marshal(e)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			out.Write(b)
			out.WriteByte('\n')
		}
		if err := out.Flush(); err != nil {
			os.Exit(1)
		}
	}
	out.Flush()
}
