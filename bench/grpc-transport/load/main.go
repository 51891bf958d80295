// grpc-load: a minimal clientv3 load loop for the transport benchmark, the
// fallback compare.sh uses when bench/grpc/ (grpc-bench, the tests' load
// tool) is not in the tree.  Same command line for what compare.sh uses:
//
//	grpc-load put|range --endpoints [https://]H:P --conns M --clients N --duration D
//	          [--warmup D] [--cacert F] [--json]
//
// N clients share M connections (one clientv3.Client, hence one gRPC
// connection, each) and issue Put (256-byte values) or Range back to back.
// Prints one JSON line: requests, errors, seconds, rps, p50_ms, p99_ms.
// Built offline in GOPATH mode by build-load.sh (golang-etcd-server-dev).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.uber.org/zap"
)

type result struct {
	Op       string  `json:"op"`
	Conns    int     `json:"conns"`
	Clients  int     `json:"clients"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	Seconds  float64 `json:"seconds"`
	RPS      float64 `json:"rps"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "put" && os.Args[1] != "range") {
		fmt.Fprintln(os.Stderr, "usage: grpc-load put|range [flags]")
		os.Exit(2)
	}
	op := os.Args[1]
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated endpoints")
	conns := flag.Int("conns", 1, "gRPC connections")
	clients := flag.Int("clients", 1, "concurrent clients, spread over the connections")
	duration := flag.Duration("duration", 10*time.Second, "how long to send requests")
	valSize := flag.Int("val-size", 256, "value size in bytes (put)")
	keySpace := flag.Int("key-space-size", 100000, "keys are drawn from this many")
	warmup := flag.Duration("warmup", 0, "run this long first, not counted")
	cacert := flag.String("cacert", "", "TLS: CA bundle to verify https endpoints with")
	flag.Bool("json", true, "accepted for grpc-bench's command line; the output is always JSON")
	flag.CommandLine.Parse(os.Args[2:])
	if *conns < 1 || *clients < 1 {
		fmt.Fprintln(os.Stderr, "want --conns >= 1, --clients >= 1")
		os.Exit(2)
	}

	var tc *tls.Config
	if *cacert != "" {
		pem, err := ioutil.ReadFile(*cacert)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		tc = &tls.Config{RootCAs: x509.NewCertPool()}
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			fmt.Fprintln(os.Stderr, "no certificate in", *cacert)
			os.Exit(1)
		}
	}
	quiet := zap.NewProductionConfig()
	quiet.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	cs := make([]*clientv3.Client, *conns)
	for i := range cs {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   strings.Split(*endpoints, ","),
			DialTimeout: 5 * time.Second,
			TLS:         tc,
			LogConfig:   &quiet,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(1)
		}
		defer c.Close()
		cs[i] = c
	}
	value := strings.Repeat("v", *valSize)

	// One request per connection before the clock starts, so that dialing
	// is not measured.
	for _, c := range cs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Put(ctx, "warmup", value)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "warmup:", err)
			os.Exit(1)
		}
	}

	// run drives the load for d; with record it returns each client's
	// latencies and error count.
	run := func(d time.Duration, record bool) ([][]time.Duration, []int, float64) {
		lat := make([][]time.Duration, *clients)
		errs := make([]int, *clients)
		var wg sync.WaitGroup
		start := time.Now()
		deadline := start.Add(d)
		for i := 0; i < *clients; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				c := cs[i%len(cs)]
				r := rand.New(rand.NewSource(int64(i)))
				mine := make([]time.Duration, 0, 1<<16)
				for {
					t0 := time.Now()
					if t0.After(deadline) {
						break
					}
					key := fmt.Sprintf("k%07d", r.Intn(*keySpace))
					var err error
					if op == "put" {
						_, err = c.Put(context.Background(), key, value)
					} else {
						_, err = c.Get(context.Background(), key)
					}
					if err != nil {
						errs[i]++
						continue
					}
					if record {
						mine = append(mine, time.Since(t0))
					}
				}
				lat[i] = mine
			}(i)
		}
		wg.Wait()
		return lat, errs, time.Since(start).Seconds()
	}
	if *warmup > 0 {
		run(*warmup, false)
	}
	lat, errs, elapsed := run(*duration, true)

	var all []time.Duration
	res := result{Op: op, Conns: *conns, Clients: *clients, Seconds: elapsed}
	for i := range lat {
		all = append(all, lat[i]...)
		res.Errors += errs[i]
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	res.Requests = len(all)
	res.RPS = float64(len(all)) / elapsed
	if len(all) > 0 {
		ms := func(q float64) float64 {
			return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000
		}
		res.P50ms, res.P99ms = ms(0.50), ms(0.99)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
	if res.Errors > 0 || res.Requests == 0 {
		os.Exit(1)
	}
}
