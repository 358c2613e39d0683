// The gnet contender of bench.instructions: the same protocols as bench.servers.responder and the echo examples,
// served on gnet's public API with one event loop, so netloop's framework share can be counted against Go's.
//
//	go build -o /tmp/gnet-bench . && /tmp/gnet-bench -style nothing -port 9000
//
// Styles: "nothing" takes what arrived with Next and writes one fixed answer (the do-nothing handler), "peek"
// peeks, counts the complete requests, discards them and answers them in one write, "echo" writes back what
// arrived. The process serves until SIGTERM or SIGINT, or with -exit-on-eof until its standard input ends (how
// bench.instructions stops it: a signal to a Go program trips an assertion in callgrind), and exits through os.Exit
// so a profiler sees a normal end.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/panjf2000/gnet/v2"
)

var (
	end    = []byte("\r\n\r\n")
	answer = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!")
)

type server struct {
	gnet.BuiltinEventEngine
	style string
}

func (s *server) OnTraffic(c gnet.Conn) gnet.Action {
	switch s.style {
	case "nothing":
		_, _ = c.Next(-1)
		_, _ = c.Write(answer)
	case "echo":
		data, _ := c.Next(-1)
		_, _ = c.Write(data)
	default: // peek
		data, _ := c.Peek(-1)
		count := bytes.Count(data, end)
		if count > 0 {
			_, _ = c.Discard(bytes.LastIndex(data, end) + len(end))
			if count == 1 {
				_, _ = c.Write(answer)
			} else {
				_, _ = c.Write(bytes.Repeat(answer, count))
			}
		}
	}
	return gnet.None
}

func main() {
	style := flag.String("style", "nothing", "nothing, peek or echo")
	host := flag.String("host", "127.0.0.1", "address to bind")
	port := flag.Int("port", 9000, "port to bind")
	exitOnEOF := flag.Bool("exit-on-eof", false, "exit when standard input ends")
	flag.Parse()
	if *style != "nothing" && *style != "peek" && *style != "echo" {
		fmt.Fprintf(os.Stderr, "unknown style %q\n", *style)
		os.Exit(2)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		os.Exit(0)
	}()
	if *exitOnEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}()
	}
	addr := fmt.Sprintf("tcp://%s:%d", *host, *port)
	err := gnet.Run(&server{style: *style}, addr, gnet.WithMulticore(false), gnet.WithNumEventLoop(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
