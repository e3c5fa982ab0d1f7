package audit

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/keyward/keyward"
)

// Export formats.
const (
	JSONL = "jsonl" // one JSON object per line
	CSV   = "csv"   // a header row, then one row per event (RFC 4180 quoting)
)

// timeFormat writes times in UTC to the microsecond, the precision stores
// keep, with a fixed width so that they sort as text.
const timeFormat = "2006-01-02T15:04:05.000000Z07:00"

// csvHeader names the CSV columns, which are the JSONL fields flattened.
var csvHeader = []string{"workspace_id", "seq", "id", "time", "action", "actor_type", "actor_id", "target", "ip", "user_agent", "request_id", "changes", "mac"}

// exported is one event in the JSONL format: the fields of GET /v1/audit,
// its workspace, its sequence number and its link (hex), by which an
// archived export can later be compared with the store.
type exported struct {
	WorkspaceID string          `json:"workspace_id"`
	Seq         int64           `json:"seq"`
	ID          string          `json:"id"`
	Time        string          `json:"time"`
	Action      string          `json:"action"`
	Actor       keyward.Actor   `json:"actor"`
	Target      string          `json:"target"`
	IP          string          `json:"ip"`
	UserAgent   string          `json:"user_agent"`
	RequestID   string          `json:"request_id"`
	Changes     json.RawMessage `json:"changes"`
	MAC         string          `json:"mac"`
}

// Export writes every audit event of the given workspaces to w in format
// (JSONL or CSV), workspace after workspace in the order given, each in
// sequence order. In CSV, changes is the JSON text as stored; in JSONL it is
// the JSON value. Export verifies nothing: run Verify for that. It returns
// an EINVALID error for an unknown format, before writing anything.
func Export(ctx context.Context, log Log, w io.Writer, format string, workspaceIDs ...string) error {
	bw := bufio.NewWriter(w)
	var write func(e *keyward.AuditEvent, l keyward.AuditLink) error
	switch format {
	case JSONL:
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		write = func(e *keyward.AuditEvent, l keyward.AuditLink) error {
			changes := e.Changes
			if len(changes) == 0 {
				changes = json.RawMessage("null")
			}
			return enc.Encode(exported{
				WorkspaceID: e.WorkspaceID, Seq: l.Seq, ID: e.ID, Time: e.Time.UTC().Format(timeFormat),
				Action: e.Action, Actor: e.Actor, Target: e.Target, IP: e.IP, UserAgent: e.UserAgent,
				RequestID: e.RequestID, Changes: changes, MAC: hex.EncodeToString(l.MAC),
			})
		}
	case CSV:
		cw := csv.NewWriter(bw)
		if err := cw.Write(csvHeader); err != nil {
			return err
		}
		write = func(e *keyward.AuditEvent, l keyward.AuditLink) error {
			row := []string{
				e.WorkspaceID, strconv.FormatInt(l.Seq, 10), e.ID, e.Time.UTC().Format(timeFormat), e.Action,
				e.Actor.Type, e.Actor.ID, e.Target, e.IP, e.UserAgent, e.RequestID, string(e.Changes), hex.EncodeToString(l.MAC),
			}
			for i, c := range row {
				row[i] = keyward.CSVSafe(c) // a user agent is anyone's to choose
			}
			cw.Write(row)
			cw.Flush()
			return cw.Error()
		}
	default:
		return keyward.Errorf(keyward.EINVALID, "the export format must be %s or %s, not %q", JSONL, CSV, format)
	}
	for _, ws := range workspaceIDs {
		if _, err := log.AuditChain(ctx, ws, write); err != nil {
			return fmt.Errorf("export the audit log of %s: %w", ws, err)
		}
	}
	return bw.Flush()
}
