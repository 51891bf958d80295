// failover: Go clientv3 (etcd 3.4) keeps a watch and a lease keep-alive
// across the loss of the member it talks to.
//
//	failover --endpoints URL1,URL2,URL3 --pids PID1,PID2,PID3 [--count 300 --kill-at 100]
//
// One client, connected to the victim (the leader or a follower) only,
// opens a watch on "fo/" (WithPrefix, WithRev, WithPrevKV,
// WithCreatedNotify) and a lease keep-alive, then is given all endpoints
// (SetEndpoints) so its balancer can fail over.  A second
// client, on the other members only, writes fo/seq = 1..count, one put
// after the other; after kill-at puts the program sends SIGKILL to the
// member serving the streams (the pid given for its client URL).  It then
// checks that the watch delivered every value exactly once and in order
// (consecutive mod revisions, each prev_kv the previous value), that
// keep-alive responses kept coming from another member, and that the lease
// and the key attached to it are still alive.  One JSON summary on stdout;
// exit status 0 when every check passed, 1 otherwise.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"google.golang.org/grpc/grpclog"
)

type summary struct {
	OK               bool     `json:"ok"`
	Failures         []string `json:"failures"`
	Victim           string   `json:"victim"`
	KilledMember     string   `json:"killed_member"`
	KilledURL        string   `json:"killed_url"`
	WatchMembers     []string `json:"watch_members"`
	KeepAliveMembers []string `json:"keepalive_members"`
	Events           int      `json:"events"`
	Count            int      `json:"count"`
	Duplicates       int      `json:"duplicates"`
	Missing          int      `json:"missing"`
	KeepAlivesBefore int      `json:"keepalives_before_kill"`
	KeepAlivesAfter  int      `json:"keepalives_after_kill"`
	LeaseTTLAtEnd    int64    `json:"lease_ttl_at_end"`
	LeasedKeyAtEnd   bool     `json:"leased_key_at_end"`
	WriteRetries     int      `json:"write_retries"`
	Seconds          float64  `json:"seconds"`
}

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }

type streams struct {
	cli       *clientv3.Client
	cancel    context.CancelFunc
	watch     clientv3.WatchChan
	keepalive <-chan *clientv3.LeaseKeepAliveResponse
	lease     clientv3.LeaseID
	member    uint64
}

func main() {
	eps := flag.String("endpoints", "", "client URLs")
	pidList := flag.String("pids", "", "the members' pids, in the order of --endpoints")
	count := flag.Int("count", 300, "values written")
	killAt := flag.Int("kill-at", 100, "kill the streams' member after this many values")
	ttl := flag.Int64("ttl", 5, "lease TTL in seconds")
	victimKind := flag.String("victim", "leader", "kill the leader or a follower")
	deadline := flag.Duration("deadline", 60*time.Second, "give up after this long")
	flag.Parse()
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(ioutil.Discard, ioutil.Discard, os.Stderr))

	endpoints := strings.Split(*eps, ",")
	pids := map[string]int{}
	for i, p := range strings.Split(*pidList, ",") {
		n, err := strconv.Atoi(p)
		if err != nil || i >= len(endpoints) {
			fmt.Fprintln(os.Stderr, "bad --pids")
			os.Exit(2)
		}
		pids[endpoints[i]] = n
	}
	s := &summary{Count: *count, Failures: []string{}}
	start := time.Now()
	end := start.Add(*deadline)
	var failMu sync.Mutex
	fail := func(format string, a ...interface{}) {
		failMu.Lock()
		s.Failures = append(s.Failures, fmt.Sprintf(format, a...))
		failMu.Unlock()
	}
	finish := func() {
		failMu.Lock()
		defer failMu.Unlock()
		s.OK = len(s.Failures) == 0
		s.Seconds = time.Since(start).Seconds()
		b, _ := json.Marshal(s)
		fmt.Println(string(b))
		if !s.OK {
			os.Exit(1)
		}
		os.Exit(0)
	}

	// Member IDs and client URLs.
	admin, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		fail("connecting: %v", err)
		finish()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	ml, err := admin.MemberList(ctx)
	cancel()
	if err != nil {
		fail("member list: %v", err)
		finish()
	}
	urlOf := map[uint64]string{}
	for _, m := range ml.Members {
		if len(m.ClientURLs) > 0 {
			urlOf[m.ID] = m.ClientURLs[0]
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	first, err := admin.Put(ctx, "fo/seq", "0")
	cancel()
	if err != nil {
		fail("first put: %v", err)
		finish()
	}
	startRev := first.Header.Revision + 1

	// The victim: the leader or a follower, as asked.
	var victim uint64
	for _, e := range endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		sr, err := admin.Status(ctx, e)
		cancel()
		if err != nil {
			fail("status of %s: %v", e, err)
			finish()
		}
		isLeader := sr.Leader == sr.Header.MemberId
		if (*victimKind == "leader") == isLeader {
			victim = sr.Header.MemberId
			break
		}
	}
	admin.Close()
	if victim == 0 {
		fail("no %s found", *victimKind)
		finish()
	}
	victimURL := urlOf[victim]

	// The stream client starts with the victim as its only endpoint, so the
	// watch and the keep-alive stream both run on it; then it learns all
	// endpoints, which clientv3's balancer fails over to.
	st := &streams{member: victim}
	st.cli, err = clientv3.New(clientv3.Config{
		Endpoints: []string{victimURL}, DialTimeout: 5 * time.Second,
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
	})
	if err != nil {
		fail("connecting the stream client: %v", err)
		finish()
	}
	var sctx context.Context
	sctx, st.cancel = context.WithCancel(context.Background())
	gctx, gcancel := context.WithTimeout(sctx, 10*time.Second)
	g, err := st.cli.Grant(gctx, *ttl)
	gcancel()
	if err != nil {
		fail("lease grant: %v", err)
		finish()
	}
	st.lease = g.ID
	if st.keepalive, err = st.cli.KeepAlive(sctx, g.ID); err != nil {
		fail("keep-alive: %v", err)
		finish()
	}
	st.watch = st.cli.Watch(clientv3.WithRequireLeader(sctx), "fo/", clientv3.WithPrefix(),
		clientv3.WithRev(startRev), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	timer := time.After(10 * time.Second)
	for gotKA, gotW := false, false; !gotKA || !gotW; {
		select {
		case _, ok := <-st.keepalive:
			if !ok {
				fail("keep-alive channel closed at start")
				finish()
			}
			gotKA = true
		case w, ok := <-st.watch:
			if !ok || w.Err() != nil {
				fail("watch failed at start: %v", w.Err())
				finish()
			}
			if w.Created {
				if w.Header.MemberId != victim {
					fail("watch created by %s, not %s", hexID(w.Header.MemberId), hexID(victim))
				}
				gotW = true
			}
		case <-timer:
			fail("no keep-alive or watch-created response within 10s")
			finish()
		}
	}
	st.cli.SetEndpoints(endpoints...)
	defer st.cli.Close()
	victimPid, ok := pids[victimURL]
	if !ok {
		fail("no pid for member %s (%s)", hexID(st.member), victimURL)
		finish()
	}
	s.KilledMember, s.KilledURL, s.Victim = hexID(st.member), victimURL, *victimKind

	// The writer talks to the other members only.
	var others []string
	for _, e := range endpoints {
		if e != victimURL {
			others = append(others, e)
		}
	}
	writer, err := clientv3.New(clientv3.Config{Endpoints: others, DialTimeout: 5 * time.Second})
	if err != nil {
		fail("connecting the writer: %v", err)
		finish()
	}
	defer writer.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	_, err = writer.Put(ctx, "leased/key", "alive", clientv3.WithLease(st.lease))
	cancel()
	if err != nil {
		fail("put with lease: %v", err)
		finish()
	}

	// Keep-alive responses, counted before and after the kill.
	var mu sync.Mutex
	killed := false
	kaMembers := map[string]bool{}
	kaDone := make(chan struct{})
	go func() {
		defer close(kaDone)
		for r := range st.keepalive {
			mu.Lock()
			kaMembers[hexID(r.MemberId)] = true
			if killed {
				s.KeepAlivesAfter++
			} else {
				s.KeepAlivesBefore++
			}
			mu.Unlock()
		}
	}()

	// The watcher: every value once, in order.
	wMembers := map[string]bool{}
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		next := 1
		var lastRev int64
		for w := range st.watch {
			if err := w.Err(); err != nil {
				fail("watch error: %v", err)
				return
			}
			mu.Lock()
			wMembers[hexID(w.Header.MemberId)] = true
			mu.Unlock()
			for _, ev := range w.Events {
				s.Events++
				v, err := strconv.Atoi(string(ev.Kv.Value))
				if err != nil || string(ev.Kv.Key) != "fo/seq" {
					fail("unexpected event %s=%q", ev.Kv.Key, ev.Kv.Value)
					continue
				}
				if lastRev != 0 && ev.Kv.ModRevision != lastRev+1 {
					if ev.Kv.ModRevision <= lastRev {
						s.Duplicates++
					}
					fail("event for %d at revision %d after revision %d", v, ev.Kv.ModRevision, lastRev)
				}
				if v < next {
					s.Duplicates++
					fail("value %d delivered again", v)
				} else if v > next {
					s.Missing += v - next
					fail("values %d..%d missing", next, v-1)
				}
				if ev.PrevKv == nil || string(ev.PrevKv.Value) != strconv.Itoa(v-1) {
					fail("event %d: prev_kv %v", v, ev.PrevKv)
				}
				lastRev = ev.Kv.ModRevision
				next = v + 1
				if v == *count {
					return
				}
			}
		}
		fail("watch channel closed after value %d", next-1)
	}()

	for i := 1; i <= *count; i++ {
		if i == *killAt+1 {
			if err := syscall.Kill(victimPid, syscall.SIGKILL); err != nil {
				fail("kill %d: %v", victimPid, err)
				finish()
			}
			mu.Lock()
			killed = true
			mu.Unlock()
		}
		for {
			if time.Now().After(end) {
				fail("deadline passed while writing value %d", i)
				finish()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			// Put only if the previous value is there: a retried put whose
			// first attempt did commit is not written twice.
			r, err := writer.Txn(ctx).If(clientv3.Compare(clientv3.Value("fo/seq"), "=",
				strconv.Itoa(i-1))).Then(clientv3.OpPut("fo/seq", strconv.Itoa(i))).Commit()
			cancel()
			if err == nil {
				if !r.Succeeded {
					// An earlier attempt committed: fo/seq is i already.
					s.WriteRetries++
				}
				break
			}
			s.WriteRetries++
			time.Sleep(50 * time.Millisecond)
		}
		// Keep the rate moderate so keep-alives interleave with the writes.
		time.Sleep(5 * time.Millisecond)
	}

	select {
	case <-watchDone:
	case <-time.After(time.Until(end)):
		fail("watcher did not receive value %d before the deadline (%d events)", *count, s.Events)
	}
	// Keep-alives must keep coming after the kill (every TTL/3).
	waitUntil := time.Now().Add(time.Duration(*ttl) * time.Second)
	for time.Now().Before(waitUntil) {
		mu.Lock()
		n := s.KeepAlivesAfter
		mu.Unlock()
		if n >= 2 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	ttlr, err := writer.TimeToLive(ctx, st.lease, clientv3.WithAttachedKeys())
	cancel()
	if err != nil {
		fail("time to live: %v", err)
	} else {
		s.LeaseTTLAtEnd = ttlr.TTL
		for _, k := range ttlr.Keys {
			if string(k) == "leased/key" {
				s.LeasedKeyAtEnd = true
			}
		}
	}
	mu.Lock()
	if s.KeepAlivesAfter < 2 {
		fail("%d keep-alive responses after the kill", s.KeepAlivesAfter)
	}
	for m := range kaMembers {
		s.KeepAliveMembers = append(s.KeepAliveMembers, m)
	}
	mu.Unlock()
	mu.Lock()
	for m := range wMembers {
		s.WatchMembers = append(s.WatchMembers, m)
	}
	if s.LeaseTTLAtEnd <= 0 {
		fail("lease expired (TTL %d)", s.LeaseTTLAtEnd)
	}
	if !s.LeasedKeyAtEnd {
		fail("leased/key is no longer attached to the lease")
	}
	resumed := false
	for m := range wMembers {
		if m != s.KilledMember {
			resumed = true
		}
	}
	mu.Unlock()
	if !resumed {
		fail("the watch never answered from another member")
	}
	st.cancel()
	finish()
}
