// grpc-bench: a load generator for etcd's v3 gRPC API built on Go clientv3
// (the client etcdctl and Kubernetes use), so muster and etcd are measured
// through the same client code.  Written for this repository; it follows
// the shape of etcd's tools/benchmark (N clients sharing M connections,
// one endpoint per connection, round robin), which Debian does not ship.
//
//	grpc-bench put   --endpoints=URL[,URL...] --conns=8 --clients=64 --total=20000
//	grpc-bench range --endpoints=... --consistency=s --duration=5s
//
// Output: one human-readable summary on stderr and, with --json, one JSON
// object on stdout (requests/s, latency percentiles in milliseconds, errors).
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
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"google.golang.org/grpc/grpclog"
)

type options struct {
	endpoints   []string
	conns       int
	clients     int
	total       int64
	duration    time.Duration
	keySize     int
	valSize     int
	keySpace    int
	seqKeys     bool
	key         string
	consistency string
	timeout     time.Duration
	dialTimeout time.Duration
	cacert      string
	cert        string
	keyFile     string
	jsonOut     bool
	warmup      time.Duration
	maxErrors   int64
}

type result struct {
	Op          string  `json:"op"`
	Consistency string  `json:"consistency,omitempty"`
	Endpoints   int     `json:"endpoints"`
	Conns       int     `json:"conns"`
	Clients     int     `json:"clients"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	AvgMs       float64 `json:"avg_ms"`
	P50Ms       float64 `json:"p50_ms"`
	P90Ms       float64 `json:"p90_ms"`
	P99Ms       float64 `json:"p99_ms"`
	P999Ms      float64 `json:"p999_ms"`
	MaxMs       float64 `json:"max_ms"`
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s put|range [flags]\n", os.Args[0])
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "put" && os.Args[1] != "range") {
		usage()
	}
	op := os.Args[1]
	fs := flag.NewFlagSet(op, flag.ExitOnError)
	var o options
	eps := fs.String("endpoints", "127.0.0.1:2379", "comma-separated client URLs; connection i dials endpoint i % len")
	fs.IntVar(&o.conns, "conns", 1, "gRPC connections (clientv3 clients)")
	fs.IntVar(&o.clients, "clients", 1, "concurrent request loops, spread over the connections")
	fs.Int64Var(&o.total, "total", 0, "stop after this many requests (0: use --duration)")
	fs.DurationVar(&o.duration, "duration", 0, "stop after this long (0: use --total)")
	fs.IntVar(&o.keySize, "key-size", 8, "put: key size in bytes")
	fs.IntVar(&o.valSize, "val-size", 256, "put: value size in bytes")
	fs.IntVar(&o.keySpace, "key-space-size", 100000, "put: keys are chosen from this many")
	fs.BoolVar(&o.seqKeys, "sequential-keys", false, "put: keys in sequence instead of random")
	fs.StringVar(&o.key, "key", "grpc-bench-range-key", "range: the key read (written once before the run)")
	fs.StringVar(&o.consistency, "consistency", "l", "range: l (linearizable) or s (serializable)")
	fs.DurationVar(&o.timeout, "request-timeout", 10*time.Second, "per-request deadline")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 5*time.Second, "connection dial timeout")
	fs.StringVar(&o.cacert, "cacert", "", "TLS: CA bundle (https endpoints)")
	fs.StringVar(&o.cert, "cert", "", "TLS: client certificate")
	fs.StringVar(&o.keyFile, "key-file", "", "TLS: client key")
	fs.BoolVar(&o.jsonOut, "json", false, "print the result as one JSON object on stdout")
	fs.DurationVar(&o.warmup, "warmup", 0, "run this long before measuring (not counted)")
	fs.Int64Var(&o.maxErrors, "max-errors", 1000, "give up (exit 1) after this many failed requests")
	fs.Parse(os.Args[2:])
	o.endpoints = strings.Split(*eps, ",")
	if o.total <= 0 && o.duration <= 0 {
		o.total = 10000
	}
	if o.conns < 1 || o.clients < 1 {
		fmt.Fprintln(os.Stderr, "--conns and --clients must be at least 1")
		os.Exit(2)
	}
	if o.conns > o.clients {
		o.conns = o.clients
	}
	if o.consistency != "l" && o.consistency != "s" {
		fmt.Fprintln(os.Stderr, "--consistency must be l or s")
		os.Exit(2)
	}
	// clientv3 logs every retry through grpclog; keep stderr for the summary.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(ioutil.Discard, ioutil.Discard, os.Stderr))

	r, err := run(op, &o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc-bench:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr,
		"%s%s: %d clients on %d conns to %d endpoints: %d requests in %.2fs = %.0f req/s; "+
			"latency avg %.2f p50 %.2f p90 %.2f p99 %.2f max %.2f ms; %d errors\n",
		r.Op, map[bool]string{true: "(" + r.Consistency + ")", false: ""}[r.Op == "range"],
		r.Clients, r.Conns, r.Endpoints, r.Requests, r.Seconds, r.RPS,
		r.AvgMs, r.P50Ms, r.P90Ms, r.P99Ms, r.MaxMs, r.Errors)
	if r.FirstError != "" {
		fmt.Fprintln(os.Stderr, "first error:", r.FirstError)
	}
	if o.jsonOut {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
	}
	if r.Errors > o.maxErrors {
		os.Exit(1)
	}
}

func tlsConfig(o *options) (*tls.Config, error) {
	if o.cacert == "" && o.cert == "" {
		return nil, nil
	}
	cfg := &tls.Config{}
	if o.cacert != "" {
		pem, err := ioutil.ReadFile(o.cacert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", o.cacert)
		}
		cfg.RootCAs = pool
	}
	if o.cert != "" {
		c, err := tls.LoadX509KeyPair(o.cert, o.keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

func run(op string, o *options) (*result, error) {
	tc, err := tlsConfig(o)
	if err != nil {
		return nil, err
	}
	conns := make([]*clientv3.Client, o.conns)
	for i := range conns {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{o.endpoints[i%len(o.endpoints)]},
			DialTimeout: o.dialTimeout,
			TLS:         tc,
		})
		if err != nil {
			return nil, fmt.Errorf("connecting to %s: %v", o.endpoints[i%len(o.endpoints)], err)
		}
		defer c.Close()
		conns[i] = c
	}

	value := strings.Repeat("v", o.valSize)
	if op == "range" {
		ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
		_, err := conns[0].Put(ctx, o.key, value)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("writing the range key: %v", err)
		}
	}

	var seq int64
	keyOf := func(rng *rand.Rand) string {
		var n int
		if o.seqKeys {
			n = int(atomic.AddInt64(&seq, 1)-1) % o.keySpace
		} else {
			n = rng.Intn(o.keySpace)
		}
		k := fmt.Sprintf("%0*d", o.keySize, n)
		if len(k) > o.keySize && o.keySize > 0 {
			k = k[len(k)-o.keySize:]
		}
		return k
	}
	var getOpts []clientv3.OpOption
	if o.consistency == "s" {
		getOpts = append(getOpts, clientv3.WithSerializable())
	}
	do := func(c *clientv3.Client, rng *rand.Rand) error {
		ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
		defer cancel()
		var err error
		if op == "put" {
			_, err = c.Put(ctx, keyOf(rng), value)
		} else {
			_, err = c.Get(ctx, o.key, getOpts...)
		}
		return err
	}

	// Warm-up: every client runs until the deadline, nothing is recorded.
	if o.warmup > 0 {
		end := time.Now().Add(o.warmup)
		var wg sync.WaitGroup
		for i := 0; i < o.clients; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				rng := rand.New(rand.NewSource(int64(i) + 7919))
				for time.Now().Before(end) {
					do(conns[i%len(conns)], rng)
				}
			}(i)
		}
		wg.Wait()
	}

	var issued, errs int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, o.clients)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := time.Time{}
	if o.duration > 0 {
		deadline = start.Add(o.duration)
	}
	for i := 0; i < o.clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(i) + 1))
			c := conns[i%len(conns)]
			mine := make([]time.Duration, 0, 1024)
			for {
				if o.total > 0 && atomic.AddInt64(&issued, 1) > o.total {
					break
				}
				t0 := time.Now()
				if !deadline.IsZero() && !t0.Before(deadline) {
					break
				}
				if err := do(c, rng); err != nil {
					if atomic.AddInt64(&errs, 1) == 1 {
						firstErr.Store(err.Error())
					}
					if atomic.LoadInt64(&errs) > o.maxErrors {
						break
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			lat[i] = mine
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(a, b int) bool { return all[a] < all[b] })
	r := &result{
		Op: op, Endpoints: len(o.endpoints), Conns: len(conns), Clients: o.clients,
		Requests: int64(len(all)), Errors: errs, Seconds: elapsed.Seconds(),
	}
	if op == "range" {
		r.Consistency = o.consistency
	}
	if s, ok := firstErr.Load().(string); ok {
		r.FirstError = s
	}
	if len(all) > 0 {
		var sum time.Duration
		for _, d := range all {
			sum += d
		}
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		pct := func(p float64) float64 {
			i := int(p*float64(len(all))+0.5) - 1
			if i < 0 {
				i = 0
			}
			if i >= len(all) {
				i = len(all) - 1
			}
			return ms(all[i])
		}
		r.RPS = float64(len(all)) / elapsed.Seconds()
		r.AvgMs = ms(sum) / float64(len(all))
		r.P50Ms, r.P90Ms, r.P99Ms, r.P999Ms = pct(0.50), pct(0.90), pct(0.99), pct(0.999)
		r.MaxMs = ms(all[len(all)-1])
	}
	return r, nil
}
