package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/gateway"
	"github.com/keyward/keyward/internal/postgres"
	"github.com/keyward/keyward/internal/sqlite"
	"github.com/keyward/keyward/internal/usage"
)

// gatewayServer is the gateway listener of keyward serve. Its handler is
// swapped whole on SIGHUP, so in-flight requests finish on the config they
// started with.
type gatewayServer struct {
	obs     gateway.Observer
	usage   *usage.Recorder // nil with --usage=false
	path    string
	log     *slog.Logger
	store   keyward.Store
	verify  gateway.Verifier
	listen  string
	tls     *gateway.TLS
	server  gateway.ServerSettings // the listener's, fixed until a restart
	wsID    string                 // the workspace of the running config, for audit events
	wsName  string                 // ... and its name, as the config gives it
	routes  int                    // the running config's route count
	handler atomic.Pointer[http.Handler]
	http    gatewayListener // gateway.Server on a plain listener, net/http's with TLS
	ln      net.Listener
	// active counts the requests being handled, for wait: net/http's
	// Close forgets its connections at once, and its Shutdown then waits
	// for none of their handlers. WebSocket upgrades are not counted:
	// their connections are taken over, which no Close cuts, so a wait
	// for them would hold the stop for all of its bound.
	active atomic.Int64
}

// wait waits until no request is being handled, or ctx ends; it returns
// how many still are.
func (g *gatewayServer) wait(ctx context.Context) int64 {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		n := g.active.Load()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return g.active.Load()
		case <-t.C:
		}
	}
}

// openGateway loads the gateway config, resolves its workspace and binds
// its listener.
func openGateway(ctx context.Context, path string, store keyward.Store, v gateway.Verifier, obs gateway.Observer, rec *usage.Recorder, log *slog.Logger) (*gatewayServer, error) {
	g := &gatewayServer{path: path, log: log, store: store, verify: v, obs: obs, usage: rec}
	cfg, h, err := g.load(ctx)
	if err != nil {
		return nil, fmt.Errorf("--gateway-config: %w", err)
	}
	g.listen, g.tls, g.routes = cfg.Listen, cfg.TLS, len(cfg.Routes)
	g.handler.Store(&h)
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gateway.IsUpgrade(r) {
			(*g.handler.Load()).ServeHTTP(w, r)
			return
		}
		g.active.Add(1)
		defer g.active.Add(-1)
		(*g.handler.Load()).ServeHTTP(w, r)
	})
	// No read or write timeout on the whole exchange on either server:
	// request and response bodies of any size and duration stream through;
	// each route's timeout bounds the wait for the upstream's headers, and
	// both drop clients that stall (send and body timeouts).
	ss := cfg.Server
	g.server = ss
	// What net/http's HTTP/2 server refuses before a request reaches the
	// handler leaves no access-log line: metrics count it at least.
	var h2 *http.HTTP2Config
	if o, ok := obs.(gateway.HTTP2Observer); ok {
		h2 = &http.HTTP2Config{CountError: o.ObserveGatewayHTTP2Error}
	}
	// What the gateway's own server refuses before routing is counted
	// under the route "unmatched", as the README promises.
	var refused func(int)
	if o, ok := obs.(gateway.RefusedObserver); ok {
		refused = o.ObserveGatewayRefused
	}
	var tc *tls.Config
	if cfg.TLS == nil {
		// The gateway's own HTTP/1.1 server: on a small machine, net/http's
		// costs the gateway about a third of its throughput.
		g.http = &gateway.Server{
			Handler: serve, ReadHeaderTimeout: ss.HeaderTimeout, IdleTimeout: ss.IdleTimeout,
			SendTimeout: ss.SendTimeout, BodyTimeout: ss.BodyTimeout,
			MaxHeaderBytes: ss.MaxHeaderBytes, Log: log, HTTP2: h2, Refused: refused,
		}
	} else {
		// With TLS, net/http's server, which speaks HTTP/2 as well; the
		// handler arms the send and body timeouts.
		cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if err != nil {
			closeHandler(h)
			return nil, fmt.Errorf("%s: tls: %w", path, err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
		g.http = &http.Server{
			Handler:           gateway.ClientTimeouts(serve, ss.SendTimeout, ss.BodyTimeout),
			ReadHeaderTimeout: ss.HeaderTimeout, IdleTimeout: ss.IdleTimeout,
			MaxHeaderBytes: ss.MaxHeaderBytes, TLSConfig: tc,
			// ReadHeaderTimeout bounds HTTP/1 only.
			ConnState: gateway.HTTP2HeaderTimeout(ss.HeaderTimeout),
			ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			HTTP2:     h2,
		}
	}
	if g.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		closeHandler(h)
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if tc != nil {
		g.ln = tls.NewListener(g.ln, tc)
	}
	return g, nil
}

// gatewayListener serves the gateway's listener.
type gatewayListener interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// load reads and validates the config file and builds its handler.
func (g *gatewayServer) load(ctx context.Context) (*gateway.Config, http.Handler, error) {
	cfg, err := gateway.Load(g.path)
	if err != nil {
		return nil, nil, err
	}
	// A workspace is never renamed nor deleted: the running config's
	// stands, and a reload that keeps it needs no store, so that routes
	// can change while the store is unreachable (to drain an upstream).
	wsID := g.wsID
	if wsID == "" || cfg.Workspace != g.wsName {
		ws, err := g.store.FindWorkspaceByName(ctx, cfg.Workspace)
		if keyward.ErrorCode(err) == keyward.ENOTFOUND {
			// At its line, as gateway check says it: the store's own
			// error, a *keyward.Error, would be printed without the file.
			return nil, nil, workspaceMissing(g.path, cfg)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: workspace %q: %w", g.path, cfg.Workspace, err)
		}
		wsID = ws.ID
	}
	g.wsID, g.wsName = wsID, cfg.Workspace
	h := gateway.NewHandler(cfg, g.verify, wsID, g.log)
	if g.obs != nil {
		h.SetObserver(g.obs)
	}
	if g.usage != nil {
		h.SetUsage(g.usage)
	}
	return cfg, h, nil
}

// run serves until ctx ends, reloading the config on SIGHUP: a file that
// does not load is logged and the running config keeps serving.
func (g *gatewayServer) run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				wsID := g.wsID
				cfg, h, err := g.load(ctx)
				if err != nil {
					g.log.Error("gateway config reload failed; the previous config keeps serving", "err", err)
					g.audit(ctx, wsID, "gateway.reload_failed", map[string]any{"file": g.path})
					continue
				}
				if cfg.Listen != g.listen {
					g.log.Warn("gateway listen address changes only on restart", "listen", g.listen, "new", cfg.Listen)
				}
				if !sameTLS(cfg.TLS, g.tls) {
					g.log.Warn("gateway tls changes only on restart")
				}
				if cfg.Server != g.server {
					g.log.Warn("gateway server settings change only on restart")
				}
				old := g.handler.Swap(&h)
				// Requests still in flight on the old handler keep working:
				// Close stops only its health checks.
				closeHandler(*old)
				g.log.Info("gateway config reloaded", "routes", len(cfg.Routes))
				g.audit(ctx, g.wsID, "gateway.reload", map[string]any{
					"file": g.path, "routes": map[string]int{"from": g.routes, "to": len(cfg.Routes)},
				})
				g.routes = len(cfg.Routes)
			}
		}
	}()
	defer func() { closeHandler(*g.handler.Load()) }()
	g.log.Info("keyward gateway listening", "addr", g.ln.Addr().String(), "tls", g.tls != nil)
	err := g.http.Serve(g.ln)
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

// audit records a reload, or a failed one, in the gateway workspace's
// audit log. The file's contents are not recorded: upstream URLs may hold
// credentials. A failure to record is logged; the reload stands.
func (g *gatewayServer) audit(ctx context.Context, wsID, action string, changes map[string]any) {
	b, err := json.Marshal(changes)
	if err == nil {
		now := time.Now()
		err = g.store.AppendAudit(ctx, &keyward.AuditEvent{
			ID: keyward.NewID(keyward.PrefixEvent, now), WorkspaceID: wsID, Time: now, Action: action,
			Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: wsID, Changes: b,
		})
	}
	if err != nil {
		g.log.Error("could not record the gateway reload in the audit log", "action", action, "err", err)
	}
}

// closeHandler stops the background work of a gateway handler.
func closeHandler(h http.Handler) {
	if c, ok := h.(io.Closer); ok {
		c.Close()
	}
}

func sameTLS(a, b *gateway.TLS) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

var gatewayGroup = group{
	path: "gateway",
	intro: "Work with the config of the enforcing gateway that keyward serve runs with\n" +
		"--gateway-config (KEYWARD_GATEWAY_CONFIG).",
	examples: []string{"keyward gateway check gateway.yaml"},
}

// cmdGateway dispatches the gateway commands.
func cmdGateway(ctx context.Context, e *env, args []string) error {
	return dispatch(ctx, e, gatewayGroup, []command{
		{"check", "validate a gateway config file and report every error with its line", cmdGatewayCheck},
	}, args)
}

// cmdGatewayCheck validates a gateway config file and reports every error
// with its line.
func cmdGatewayCheck(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "gateway check", help{
		usage: "[FILE] [--data-dir DIR | --database-url URL]",
		summary: "Validate a gateway config file: every error is reported with its line, and the\n" +
			"exit status is 1 when there is any. Without FILE, the one KEYWARD_GATEWAY_CONFIG\n" +
			"names, as keyward serve takes it. keyward serve --gateway-config loads the same\n" +
			"file, and reloads it on SIGHUP (a file that fails keeps the previous config).",
		notes: []string{"With --data-dir or --database-url (or KEYWARD_DATA_DIR, KEYWARD_DATABASE_URL or\n" +
			"its _FILE), the check also looks the config's workspace up in that store, reading\n" +
			"only, and reports one that is not there as an error, as serve would refuse the\n" +
			"file; it needs no server secret, and creates no store where there is none. Without\n" +
			"them it reads no store and says nothing of whether the workspace exists."},
		examples: []string{
			"keyward gateway check gateway.yaml",
			"keyward gateway check gateway.yaml --data-dir /var/lib/keyward",
		},
	})
	var store storeConfig
	defineStoreFlags(fs, &store)
	// Its ./keyward-data default is not used: no store is read unless
	// one is named.
	fs.Describe("data-dir", "look the config's workspace up in the embedded SQLite store in `DIR`, reading only; "+
		"no default: unless a store is named (by this, KEYWARD_DATA_DIR or a database URL), none is read", "")
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	// The default data dir is no store named: without one, the check
	// stays offline.
	online := store.DatabaseURL != "" || fs.Changed("data-dir") || fs.envValue("KEYWARD_DATA_DIR") != ""
	if len(args) == 0 {
		if v := fs.envValue("KEYWARD_GATEWAY_CONFIG"); v != "" {
			args = []string{v}
		}
	}
	if len(args) != 1 {
		return fs.usagef("give one config file (or set KEYWARD_GATEWAY_CONFIG)")
	}
	cfg, err := gateway.Check(args[0])
	if err == nil && online {
		err = checkWorkspace(ctx, store, args[0], cfg)
	}
	var ce *gateway.ConfigErrors
	if errors.As(err, &ce) {
		// One line per problem, as compilers write them, for people and
		// editors alike.
		for _, line := range strings.Split(ce.Error(), "\n") {
			fmt.Fprintln(e.stderr, line)
		}
		n := len(ce.Errs)
		errs := "errors"
		if n == 1 {
			errs = "error"
		}
		return fmt.Errorf("%s: %d %s", args[0], n, errs)
	}
	if err != nil {
		return err
	}
	routes := "routes"
	if len(cfg.Routes) == 1 {
		routes = "route"
	}
	found := ""
	if online {
		found = " (in the store)"
	}
	fmt.Fprintf(e.stdout, "%s: OK, listen %s, workspace %q%s, %d %s\n", args[0], cfg.Listen, cfg.Workspace, found, len(cfg.Routes), routes)
	return nil
}

// checkWorkspace looks the workspace of the gateway config cfg, from the
// file path, up in the store c names, reading only, and returns a
// *gateway.ConfigErrors at its line when it is not there: serve would
// refuse the file. A data dir without a store is an error; none is made.
func checkWorkspace(ctx context.Context, c storeConfig, path string, cfg *gateway.Config) error {
	var found bool
	var err error
	if c.DatabaseURL != "" {
		found, err = postgres.HasWorkspace(ctx, c.DatabaseURL, cfg.Workspace)
		if errors.Is(err, postgres.ErrNoStore) {
			// As for a data dir without one: no workspace to look up.
			return fmt.Errorf("%w (--database-url)", err)
		}
	} else {
		db := filepath.Join(c.DataDir, "keyward.db")
		if _, serr := os.Stat(db); serr != nil {
			return fmt.Errorf("no keyward store in %s: %w", c.DataDir, serr)
		}
		found, err = sqlite.HasWorkspace(ctx, db, cfg.Workspace)
	}
	if err != nil {
		return fmt.Errorf("looking up workspace %q: %w", cfg.Workspace, err)
	}
	if found {
		return nil
	}
	return workspaceMissing(path, cfg)
}

// workspaceMissing returns the error of the gateway config cfg, from the
// file path, whose workspace is not in the store: a *gateway.ConfigErrors
// at the workspace's line.
func workspaceMissing(path string, cfg *gateway.Config) error {
	return &gateway.ConfigErrors{File: path, Errs: []gateway.ConfigError{
		{Line: cfg.WorkspaceLine, Field: "workspace", Msg: fmt.Sprintf("%q: no workspace of that name in the store", cfg.Workspace)},
	}}
}
