// Command count reads stdin until EOF or -n lines, then prints
// "lines bytes seconds" measured from its own start, for bench/eventlog.sh.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

func main() {
	start := time.Now()
	n := flag.Int("n", 0, "stop after this many lines (0: at EOF)")
	flag.Parse()
	buf := make([]byte, 256<<10)
	lines, size := 0, 0
	for *n == 0 || lines < *n {
		k, err := os.Stdin.Read(buf)
		lines += bytes.Count(buf[:k], []byte{'\n'})
		size += k
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Printf("%d %d %.3f\n", lines, size, time.Since(start).Seconds())
}
