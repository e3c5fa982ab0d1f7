package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/audit"
	"github.com/keyward/keyward/internal/fsutil"
)

var auditGroup = group{
	path: "audit",
	intro: "Check and export the audit log. The commands read the store directly, with the same\n" +
		"--data-dir or --database-url and server secret (KEYWARD_SECRET) as keyward serve.",
	examples: []string{
		"keyward audit verify",
		"keyward audit verify --workspace acme --database-url postgres://keyward@db.internal/keyward",
		"keyward audit export --format csv --output-file audit.csv",
		"keyward audit prune --older-than 8760h",
	},
}

func auditCommands() []command {
	return []command{
		{"verify", "check that no audit event was changed, removed or reordered", cmdAuditVerify},
		{"export", "write the audit log as JSON lines or CSV", cmdAuditExport},
		{"prune", "remove old audit events, recording the cut in the chain", cmdAuditPrune},
	}
}

// cmdAudit dispatches the audit subcommands.
func cmdAudit(ctx context.Context, e *env, args []string) error {
	return dispatch(ctx, e, auditGroup, auditCommands(), args)
}

// auditStore is what both audit commands open: the store, the server keys
// and the workspaces asked for.
type auditStore struct {
	store      keyward.Store
	keys       [][]byte // audit chain keys: the current one first
	workspaces []string // ids, in order
	names      map[string]string
	stored     *storedKeys // the stored token secrets by key; nil when not counted
}

// defineAuditFlags defines the store flags and --workspace.
func defineAuditFlags(fs *flagSet, cfg *storeConfig, workspace *string) {
	defineStoreFlags(fs, cfg)
	fs.String(workspace, "workspace", "", "", "only the workspace with this `NAME` or id (default: every workspace)")
	defineServerSecrets(fs, cfg)
}

// openAudit opens the store with the secrets its flags read, and resolves
// workspace ("": every workspace, including those whose whole log is
// gone). Unlike the commands that prepare a store, it creates neither a
// SQLite store nor its server secret: checking a log under a new random
// key would only report every event changed.
func openAudit(ctx context.Context, e *env, cfg storeConfig, workspace string) (_ *auditStore, err error) {
	if cfg.DatabaseURL == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "keyward.db")); err != nil {
			return nil, fmt.Errorf("no keyward store in %s: %w", cfg.DataDir, err)
		}
		// A store without its server.secret: keyring refuses to make one.
	}
	keys, err := keyring(cfg)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, cfg, keys)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	current, previous := auditKeys(keys)
	a := &auditStore{store: st, keys: append([][]byte{current}, previous...), names: map[string]string{},
		stored: checkKeys(ctx, st, keys, slog.New(slog.DiscardHandler))}
	if workspace != "" {
		id, err := resolveWorkspace(ctx, st, workspace)
		if err != nil {
			return nil, err
		}
		a.workspaces = []string{id}
	} else if a.workspaces, err = audit.Workspaces(ctx, st); err != nil {
		return nil, err
	}
	for _, id := range a.workspaces {
		if ws, err := st.FindWorkspace(ctx, id); err == nil {
			a.names[id] = ws.Name
		} else if keyward.ErrorCode(err) != keyward.ENOTFOUND {
			return nil, err
		}
	}
	return a, nil
}

// resolveWorkspace returns the id of the workspace named s, or with id s,
// or, for a workspace that no longer exists, with audit events under id s.
func resolveWorkspace(ctx context.Context, st keyward.Store, s string) (string, error) {
	ws, err := st.FindWorkspaceByName(ctx, s)
	if err == nil {
		return ws.ID, nil
	}
	if keyward.ErrorCode(err) != keyward.ENOTFOUND {
		return "", err
	}
	if ws, err = st.FindWorkspace(ctx, s); err == nil {
		return ws.ID, nil
	} else if keyward.ErrorCode(err) != keyward.ENOTFOUND {
		return "", err
	}
	ids, err := st.AuditWorkspaces(ctx)
	if err != nil {
		return "", err
	}
	if slices.Contains(ids, s) {
		return s, nil
	}
	return "", fmt.Errorf("no workspace is named %q or has that id", s)
}

// label names a workspace for people.
func (a *auditStore) label(id string) string {
	if name, ok := a.names[id]; ok {
		return fmt.Sprintf("workspace %q (%s)", name, id)
	}
	return fmt.Sprintf("workspace %s (no longer exists)", id)
}

// cmdAuditVerify verifies the audit chain of one or every workspace.
func cmdAuditVerify(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "audit verify", help{
		summary: "Walk the audit chain of every workspace (or of --workspace) and check every link\n" +
			"under the key derived from the server secret: it reports the first event that was\n" +
			"changed, removed or reordered, and the removal of the newest events, which the\n" +
			"chain head kept apart from the events shows. It prints one line per workspace: OK\n" +
			"with the number of events and the head, or the first problem.",
		notes: []string{
			"Events linked before the server secret was rotated verify only while the earlier\n" +
				"secret is in KEYWARD_SECRET_PREVIOUS. Keep the heads it prints somewhere else and\n" +
				"give them back with --expect-head: whoever can write the database can remove the\n" +
				"newest events together with the head (an older copy of the head put back, or the\n" +
				"database restored whole to an older state), which only a head kept elsewhere shows.",
			"Exit status: 0 when every chain is intact, 1 when one is not (or the store fails),\n" +
				"2 on a usage error.",
		},
		examples: []string{
			"keyward audit verify",
			"keyward audit verify --workspace acme",
			"keyward audit verify --expect-head evt_01m866ahdxg03hwmhd0nyjd10a",
			"KEYWARD_SECRET_FILE=/run/secrets/keyward keyward audit verify --database-url postgres://keyward@db.internal/keyward",
		},
	})
	var cfg storeConfig
	var workspace string
	var heads []string
	defineAuditFlags(fs, &cfg, &workspace)
	fs.Strings(&heads, "expect-head", "`EVENT` id of a head that an earlier verification printed: fail unless it is still in a chain")
	fs.Check(func() error {
		for _, h := range heads {
			if !strings.HasPrefix(h, keyward.PrefixEvent) {
				return fmt.Errorf("--expect-head takes an audit event id (%s...), not %q", keyward.PrefixEvent, h)
			}
		}
		return nil
	})
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	expect := map[string]bool{}
	for _, h := range heads {
		expect[h] = true
	}
	a, err := openAudit(ctx, e, cfg, workspace)
	if err != nil {
		return err
	}
	defer a.store.Close()
	if len(a.workspaces) == 0 {
		// Not done yet: a store emptied whole (every workspace, event and
		// head) looks just like this, and the heads kept elsewhere are
		// what shows it.
		fmt.Fprintln(e.stdout, "No workspaces: nothing to verify.")
	}
	bad, toldKey := 0, false
	found := map[string]string{} // expected head -> the workspace whose chain holds it
	for _, id := range a.workspaces {
		r, err := audit.VerifyExpecting(ctx, a.store, a.keys[0], id, expect, a.keys[1:]...)
		if err != nil {
			return fmt.Errorf("verify the audit log of %s: %w", a.label(id), err)
		}
		for h := range r.Found {
			found[h] = id
		}
		if r.OK() {
			cut := ""
			if r.Cut != nil {
				cut = fmt.Sprintf(", after a retention cut of %d events written before %s", r.Cut.Removed, r.Cut.Before.Format(time.RFC3339))
			}
			fmt.Fprintf(e.stdout, "%s: OK, %d events, head %s (seq %d)%s\n", a.label(id), r.Events, r.Head.EventID, r.Head.Seq, cut)
			continue
		}
		bad++
		fmt.Fprintf(e.stdout, "%s: FAILED, %s: %s\n", a.label(id), r.Problem.Kind, r.Problem.Detail)
		if r.Problem.Kind == audit.Changed && a.stored != nil && a.stored.allUnknown() {
			// Most likely not tampering: a wrong secret links nothing.
			if !toldKey {
				toldKey = true
				fmt.Fprintf(e.stdout, "  The server secret given is likely not the one that made this store: every stored token secret (%d) was made under another (key ids %s; this one is %s), and the chains are keyed with it too. "+
					"A KEYWARD_SECRET or KEYWARD_SECRET_FILE in the environment takes the place of the data dir's server.secret: give the secret that made the store (or, after a rotation, name it in KEYWARD_SECRET_PREVIOUS) and verify again.\n",
					a.stored.of, strings.Join(a.stored.ids, ","), a.stored.current)
			}
		} else if r.Problem.Kind == audit.Changed && len(a.keys) == 1 {
			// Events are linked under a key derived from the server
			// secret of their time: after a rotation, the old secret is
			// needed to verify them, and a false alarm is easy.
			fmt.Fprintln(e.stdout, "  If the server secret was rotated after that event was written, it may be intact: give the secret of that time as KEYWARD_SECRET_PREVIOUS and verify again.")
		}
	}
	missing := 0
	for _, h := range heads {
		if ws, ok := found[h]; ok {
			fmt.Fprintf(e.stdout, "expected head %s: in the chain of %s\n", h, a.label(ws))
			continue
		}
		missing++
		where := "in no chain"
		switch {
		case bad > 0:
			where = "in no chain that verified (one failed before it could be reached)"
		case workspace != "":
			where = "not in the chain of " + a.label(a.workspaces[0])
		}
		fmt.Fprintf(e.stdout, "expected head %s: FAILED, %s: the newest events were removed with their head, the store was restored to an older state, or a retention cut removed it\n", h, where)
	}
	if bad > 0 {
		return fmt.Errorf("the audit log of %d of %d workspaces failed verification", bad, len(a.workspaces))
	}
	if missing > 0 {
		return fmt.Errorf("%d of %d expected heads were not found in the chains verified", missing, len(heads))
	}
	return nil
}

// cmdAuditExport writes the audit log of one or every workspace.
func cmdAuditExport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "audit export", help{
		summary: "Write every audit event of every workspace (or of --workspace) for compliance,\n" +
			"workspace by workspace, each in the order it was written: JSON lines (one object\n" +
			"per event, the fields of GET /v1/audit plus workspace_id, seq and mac) or CSV (a\n" +
			"header row, RFC 4180 quoting, changes as JSON text). It verifies nothing: run\n" +
			"keyward audit verify for that.",
		examples: []string{
			"keyward audit export > audit.jsonl",
			"keyward audit export --format csv --workspace acme --output-file acme-audit.csv",
		},
	})
	var cfg storeConfig
	var workspace, format, output string
	defineAuditFlags(fs, &cfg, &workspace)
	fs.String(&format, "format", "", audit.JSONL, "output `FORMAT`: jsonl or csv")
	fs.String(&output, "output-file", "", "", "write to `FILE` (created mode 0600; one that exists is replaced once the export is whole, and kept if it fails) instead of standard output")
	fs.Check(func() error {
		return choose("--format", &format, audit.JSONL, audit.CSV)
	})
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	a, err := openAudit(ctx, e, cfg, workspace)
	if err != nil {
		return err
	}
	defer a.store.Close()
	if output == "" {
		return audit.Export(ctx, a.store, e.stdout, format, a.workspaces...)
	}
	if err := exportToFile(ctx, a, output, format); err != nil {
		return err
	}
	what := fmt.Sprintf("%d workspaces", len(a.workspaces))
	if len(a.workspaces) == 1 {
		what = "1 workspace"
	}
	fmt.Fprintf(e.stdout, "Wrote the audit log of %s to %s.\n", what, output)
	return nil
}

// exportToFile writes the export of a's workspaces to the file output.
// A regular file (or none yet) gets a temporary one beside it, synced and
// renamed into place only once whole: an export that fails, or is
// interrupted, leaves what was at output as it was (an earlier export,
// say) and no partial file. What is not a regular file (a device, a named
// pipe) is written to directly. A link at output is followed, so that the
// file it names is the one replaced.
func exportToFile(ctx context.Context, a *auditStore, output, format string) error {
	path := output
	if fi, err := os.Lstat(output); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		if p, err := filepath.EvalSymlinks(output); err == nil {
			path = p
		}
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		err = audit.Export(ctx, a.store, f, format, a.workspaces...)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".keyward-audit-export-*") // mode 0600
	if err != nil {
		// Named by the file asked for, not the temporary one.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("--output-file %s: %w", output, err)
	}
	tmp := f.Name()
	err = audit.Export(ctx, a.store, f, format, a.workspaces...)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	fsutil.SyncDir(filepath.Dir(path))
	return nil
}

// cmdAuditPrune removes old audit events of one or every workspace, each
// cut recorded in the chain it shortens.
func cmdAuditPrune(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "audit prune", help{
		summary: "Remove, for retention, the audit events written more than --older-than ago, in every\n" +
			"workspace (or in --workspace). Each cut is recorded in the chain itself: an\n" +
			"audit.cut event, linked like any other, says how many events were removed and which\n" +
			"link the oldest event kept is chained to, so keyward audit verify still checks the\n" +
			"whole chain that is left, and any other removal still shows. A workspace whose chain\n" +
			"does not verify is left alone: cutting it would remove the evidence.",
		notes: []string{
			"Export first (keyward audit export) when the events must be archived.",
			"Exit status: 0 when every workspace was pruned (or had nothing that old), 1 when\n" +
				"one was left alone or the store fails, 2 on a usage error.",
		},
		examples: []string{
			"keyward audit prune --older-than 8760h",
			"keyward audit prune --older-than 2160h --workspace acme",
		},
	})
	var cfg storeConfig
	var workspace string
	var olderThan time.Duration
	defineAuditFlags(fs, &cfg, &workspace)
	fs.Duration(&olderThan, "older-than", "", 0, "remove the events written more than `DURATION` ago (at least 24h), such as 8760h for a year")
	fs.Check(func() error {
		if olderThan < 24*time.Hour {
			return errors.New("--older-than is required and must be at least 24h")
		}
		return nil
	})
	args, err := fs.parse(args)
	if err != nil {
		return err
	}
	if err := noArgs(fs, args); err != nil {
		return err
	}
	a, err := openAudit(ctx, e, cfg, workspace)
	if err != nil {
		return err
	}
	defer a.store.Close()
	now := time.Now()
	before := now.Add(-olderThan).UTC()
	bad := 0
	for _, id := range a.workspaces {
		r, err := audit.Verify(ctx, a.store, a.keys[0], id, a.keys[1:]...)
		if err != nil {
			return fmt.Errorf("verify the audit log of %s: %w", a.label(id), err)
		}
		if !r.OK() {
			bad++
			fmt.Fprintf(e.stdout, "%s: left alone, its chain does not verify (%s: %s)\n", a.label(id), r.Problem.Kind, r.Problem.Detail)
			continue
		}
		ev := &keyward.AuditEvent{Time: now, Action: keyward.ActionAuditCut, Actor: keyward.Actor{Type: keyward.ActorSystem}, Target: id}
		cut, err := a.store.CutAudit(ctx, id, before, ev)
		if err != nil {
			return fmt.Errorf("prune the audit log of %s: %w", a.label(id), err)
		}
		if cut.Removed == 0 {
			fmt.Fprintf(e.stdout, "%s: no event written before %s\n", a.label(id), before.Format(time.RFC3339))
			continue
		}
		fmt.Fprintf(e.stdout, "%s: removed %d events written before %s; the cut is recorded in the chain\n", a.label(id), cut.Removed, before.Format(time.RFC3339))
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d workspaces were left alone: their audit chain does not verify", bad, len(a.workspaces))
	}
	return nil
}
