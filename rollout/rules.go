// Package rollout owns progressive rollouts of a product across many clusters: what a valid
// rollout request is (targets, waves, failure budget, soak, deadlines), the checks every target
// cluster must pass before anything starts (the publish package's own rules), and the use
// cases: create (which supersedes an earlier rollout of the product), the verbs pause, resume,
// approve, abort and retry, and the view a provider reads. RolloutWorkflow runs it.
package rollout

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/imprun/imprun-server/fault"
	"github.com/imprun/imprun-server/models"
	"github.com/imprun/imprun-server/publish"
)

// Limits and defaults.
const (
	MaxClusters = 500
	// DefaultProgressDeadline bounds each cluster's deploy when the request names none: a
	// rollout never waits forever for an offline cluster.
	DefaultProgressDeadline = 30 * time.Minute
)

// Request is the body of POST /v1/provider/rollouts: the publish fields (as a REST publish
// takes them, without cluster_id, draft and deadline_seconds), the targets and the strategy.
type Request struct {
	publish.Changes
	Targets  Targets  `json:"targets"`
	Strategy Strategy `json:"strategy"`
}

// Targets are explicit cluster ids, or a selector resolved once, when the rollout is created.
type Targets struct {
	ClusterIDs []string  `json:"cluster_ids"`
	Selector   *Selector `json:"selector"`
}

// Selector picks clusters by region and labels (all must match).
type Selector struct {
	Region string            `json:"region"`
	Labels map[string]string `json:"labels"`
}

// Strategy is how the rollout proceeds.
type Strategy struct {
	Waves []WaveRequest `json:"waves"`
	// MaxFailures is a count (3) or a percentage of the targets ("10%"); 0 by default.
	MaxFailures             any `json:"max_failures"`
	MinSuccessTimeSeconds   int `json:"min_success_time_seconds"`
	ProgressDeadlineSeconds int `json:"progress_deadline_seconds"`
}

// WaveRequest is one wave: explicit clusters, or a percentage of the targets (taken in order
// from those no earlier wave holds).
type WaveRequest struct {
	Clusters       []string `json:"clusters"`
	Percent        int      `json:"percent"`
	MaxConcurrency int      `json:"max_concurrency"`
	Gate           string   `json:"gate"`
}

// checkShape checks what needs nothing but the request itself.
func checkShape(req *Request, v *fault.Validator) {
	v.Check(req.ClusterID == nil, "cluster_id", "a rollout names its clusters in targets")
	v.Check(!req.Draft, "draft", "a rollout is never a draft")
	v.Check(req.DeadlineSeconds == nil, "deadline_seconds", "use strategy.progress_deadline_seconds")
	v.Check(req.ProductID != nil, "product_id", "required")
	v.Check((len(req.Targets.ClusterIDs) > 0) != (req.Targets.Selector != nil), "targets", "either cluster_ids or selector")
	v.Check(len(req.Targets.ClusterIDs) <= MaxClusters, "targets.cluster_ids", fmt.Sprintf("at most %d", MaxClusters))
	if s := req.Targets.Selector; s != nil {
		v.Check(s.Region != "" || len(s.Labels) > 0, "targets.selector", "a region or labels")
	}
	st := &req.Strategy
	v.Check(st.MinSuccessTimeSeconds >= 0 && st.MinSuccessTimeSeconds <= 7*24*3600, "strategy.min_success_time_seconds", "from 0 to 7 days")
	if st.ProgressDeadlineSeconds == 0 {
		st.ProgressDeadlineSeconds = int(DefaultProgressDeadline / time.Second)
	}
	v.Check(st.ProgressDeadlineSeconds >= 10 && st.ProgressDeadlineSeconds <= 30*24*3600, "strategy.progress_deadline_seconds", "from 10 seconds to 30 days")
	v.Check(len(st.Waves) <= 100, "strategy.waves", "at most 100")
	for i := range st.Waves {
		w := &st.Waves[i]
		f := "strategy.waves[" + strconv.Itoa(i) + "]"
		if w.Gate == "" {
			w.Gate = models.GateAuto
		}
		v.Check(w.Gate == models.GateAuto || w.Gate == models.GateManual, f+".gate", "auto or manual")
		v.Check((len(w.Clusters) > 0) != (w.Percent != 0), f, "either clusters or percent")
		v.Check(w.Percent >= 0 && w.Percent <= 100, f+".percent", "from 1 to 100")
		v.Check(w.MaxConcurrency >= 0 && w.MaxConcurrency <= 1000, f+".max_concurrency", "from 0 (the whole wave) to 1000")
	}
}

// parseIDs reads distinct UUIDs, naming each bad entry.
func parseIDs(field string, list []string, v *fault.Validator) []uuid.UUID {
	out := make([]uuid.UUID, 0, len(list))
	seen := map[uuid.UUID]bool{}
	for i, s := range list {
		id, err := uuid.Parse(s)
		if err != nil || seen[id] {
			v.Add(field+"["+strconv.Itoa(i)+"]", "must be a distinct UUID")
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

// resolveWaves assigns the targets to waves: explicit clusters first claim theirs, a percentage
// takes ceil(percent × targets / 100) of those still unassigned, in order; what no wave took
// joins the last wave. Without waves, one wave holds every target.
func resolveWaves(targets []uuid.UUID, waves []WaveRequest, v *fault.Validator) []models.RolloutWave {
	if len(waves) == 0 {
		return []models.RolloutWave{{Clusters: targets, Gate: models.GateAuto}}
	}
	in := map[uuid.UUID]bool{}
	for _, id := range targets {
		in[id] = true
	}
	taken := map[uuid.UUID]bool{}
	out := make([]models.RolloutWave, len(waves))
	for i, w := range waves {
		out[i] = models.RolloutWave{MaxConcurrency: w.MaxConcurrency, Gate: w.Gate, Percent: w.Percent}
		f := "strategy.waves[" + strconv.Itoa(i) + "].clusters"
		for _, id := range parseIDs(f, w.Clusters, v) {
			switch {
			case !in[id]:
				v.Add(f, "cluster "+id.String()+" is not a target")
			case taken[id]:
				v.Add(f, "cluster "+id.String()+" is in an earlier wave")
			default:
				taken[id] = true
				out[i].Clusters = append(out[i].Clusters, id)
			}
		}
	}
	for i, w := range waves {
		if w.Percent <= 0 {
			continue
		}
		n := (w.Percent*len(targets) + 99) / 100
		for _, id := range targets {
			if n == 0 {
				break
			}
			if !taken[id] {
				taken[id] = true
				out[i].Clusters = append(out[i].Clusters, id)
				n--
			}
		}
	}
	last := len(out) - 1
	for _, id := range targets {
		if !taken[id] {
			out[last].Clusters = append(out[last].Clusters, id)
		}
	}
	for i, w := range out {
		if len(w.Clusters) == 0 {
			v.Add("strategy.waves["+strconv.Itoa(i)+"]", "no cluster is left for this wave")
		}
	}
	return out
}

// maxFailures reads the budget: a count, or "N%" of total (rounded down).
func maxFailures(raw any, total int, v *fault.Validator) (int, string) {
	switch x := raw.(type) {
	case nil:
		return 0, "0"
	case float64:
		if x < 0 || x != float64(int(x)) || int(x) > total {
			v.Add("strategy.max_failures", "a whole number from 0 to the number of targets, or a percentage like \"10%\"")
			return 0, ""
		}
		return int(x), strconv.Itoa(int(x))
	case string:
		p, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(x), "%"))
		if err != nil || !strings.HasSuffix(strings.TrimSpace(x), "%") || p < 0 || p > 100 {
			v.Add("strategy.max_failures", "a percentage like \"10%\" or a whole number")
			return 0, ""
		}
		return p * total / 100, x
	}
	v.Add("strategy.max_failures", "a whole number or a percentage like \"10%\"")
	return 0, ""
}
