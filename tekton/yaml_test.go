package tekton

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tektoncd/pipeline/pkg/apis/config"
	"github.com/tektoncd/pipeline/pkg/apis/pipeline/pod"
	v1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"github.com/tektoncd/pipeline/pkg/workspace"
	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// manifests holds the decoded YAML files of this folder, by file name.
type manifests struct {
	tasks        map[string]*v1.Task // by metadata.name
	pipelines    map[string]*v1.Pipeline
	pipelineRuns map[string]*v1.PipelineRun // by file name
	pvcs         map[string]*corev1.PersistentVolumeClaim
	podTemplates map[string]*pod.Template // by file name
}

// yamlFiles reads every *.yaml file of this folder.
func yamlFiles(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) < 6 {
		t.Fatalf("found %d YAML files (%v), want the two Tasks, the Pipeline, the PipelineRun, the workspace template and the pod template", len(paths), paths)
	}
	files := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[p] = b
	}
	return files
}

// validationContexts are the cluster settings the manifests must pass under:
// Tekton's defaults (enable-api-fields: beta) and a cluster that allows only
// stable fields. Like the admission webhook, Validate runs as for a create.
func validationContexts(t *testing.T) map[string]context.Context {
	t.Helper()
	defaults, err := config.NewDefaultsFromMap(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]context.Context{}
	for _, fields := range []string{"beta", "stable"} {
		flags, err := config.NewFeatureFlagsFromMap(map[string]string{"enable-api-fields": fields})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		t.Cleanup(cancel)
		ctx = config.ToContext(ctx, &config.Config{Defaults: defaults, FeatureFlags: flags})
		out["enable-api-fields="+fields] = apis.WithinCreate(ctx)
	}
	return out
}

// check decodes every file strictly into its Kubernetes or Tekton type,
// defaults and validates it in each context, then checks the references
// between the files. It returns every problem, joined.
func check(ctxs map[string]context.Context, files map[string][]byte) (*manifests, error) {
	m := &manifests{
		tasks:        map[string]*v1.Task{},
		pipelines:    map[string]*v1.Pipeline{},
		pipelineRuns: map[string]*v1.PipelineRun{},
		pvcs:         map[string]*corev1.PersistentVolumeClaim{},
		podTemplates: map[string]*pod.Template{},
	}
	var errs []error
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := decodeAndValidate(ctxs, m, name, files[name]); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, m.crossCheck()...)
	}
	return m, errors.Join(errs...)
}

// decodeStrict decodes YAML the way the Kubernetes API server decodes a
// request with fieldValidation=Strict: duplicate keys, unknown fields and
// fields in the wrong case are errors, each named by its path. (encoding/json
// with DisallowUnknownFields alone would accept "runafter" for "runAfter".)
func decodeStrict(data []byte, into any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("YAML: %w", err)
	}
	strict, err := sigsjson.UnmarshalStrict(j, into, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func decodeAndValidate(ctxs map[string]context.Context, m *manifests, name string, data []byte) error {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(data, &head); err != nil {
		return fmt.Errorf("not YAML: %w", err)
	}
	type validatable interface {
		SetDefaults(context.Context)
		Validate(context.Context) *apis.FieldError
	}
	var obj validatable
	if head.APIVersion == "" && head.Kind == "" && strings.HasSuffix(name, "pod-template.yaml") {
		var pt pod.Template
		if err := decodeStrict(data, &pt); err != nil {
			return fmt.Errorf("strict decoding as a pod template: %w", err)
		}
		m.podTemplates[name] = &pt
		return nil
	}
	switch head.APIVersion + " " + head.Kind {
	case "tekton.dev/v1 Task":
		var task v1.Task
		if err := decodeStrict(data, &task); err != nil {
			return fmt.Errorf("strict decoding as a Task: %w", err)
		}
		m.tasks[task.Name] = &task
		obj = &task
	case "tekton.dev/v1 Pipeline":
		var p v1.Pipeline
		if err := decodeStrict(data, &p); err != nil {
			return fmt.Errorf("strict decoding as a Pipeline: %w", err)
		}
		m.pipelines[p.Name] = &p
		obj = &p
	case "tekton.dev/v1 PipelineRun":
		var pr v1.PipelineRun
		if err := decodeStrict(data, &pr); err != nil {
			return fmt.Errorf("strict decoding as a PipelineRun: %w", err)
		}
		if pr.Name == "" && pr.GenerateName != "" {
			pr.Name = pr.GenerateName + "x7k2q" // as the API server does before validating
		}
		m.pipelineRuns[name] = &pr
		obj = &pr
	case "v1 PersistentVolumeClaim":
		var pvc corev1.PersistentVolumeClaim
		if err := decodeStrict(data, &pvc); err != nil {
			return fmt.Errorf("strict decoding as a PersistentVolumeClaim: %w", err)
		}
		if len(pvc.Spec.AccessModes) == 0 || pvc.Spec.Resources.Requests.Storage().IsZero() {
			return errors.New("the claim template needs accessModes and a storage request")
		}
		m.pvcs[name] = &pvc
		return nil // Kubernetes' own validation is not a Go API; the strict decode is the check
	default:
		return fmt.Errorf("apiVersion %q kind %q: no check knows this kind; add one", head.APIVersion, head.Kind)
	}
	var errs []error
	for label, ctx := range ctxs {
		obj.SetDefaults(ctx)
		if ferr := obj.Validate(ctx); ferr != nil {
			errs = append(errs, fmt.Errorf("Validate (%s): %w", label, ferr))
		}
	}
	return errors.Join(errs...)
}

// crossCheck does what the Tekton controller does only when a run starts:
// a pipeline task's params and workspaces match the Task it names (when that
// Task is one of these files), the results it uses exist, the PipelineRun
// gives its Pipeline every required param and workspace and nothing
// undeclared, and no TaskRun binds more than one volume claim (which the
// default affinity assistant refuses).
func (m *manifests) crossCheck() []error {
	var errs []error
	for _, task := range m.tasks {
		errs = append(errs, taskVariableRefs(task)...)
	}
	for _, p := range m.pipelines {
		all := append(slices.Clone(p.Spec.Tasks), p.Spec.Finally...)
		for _, pt := range all {
			if pt.TaskRef == nil {
				continue
			}
			task, ok := m.tasks[pt.TaskRef.Name]
			if !ok {
				continue // from a catalog (git-clone)
			}
			where := fmt.Sprintf("pipeline %s, task %s (Task %s)", p.Name, pt.Name, task.Name)
			given := map[string]bool{}
			for _, prm := range pt.Params {
				given[prm.Name] = true
				if !slices.ContainsFunc(task.Spec.Params, func(s v1.ParamSpec) bool { return s.Name == prm.Name }) {
					errs = append(errs, fmt.Errorf("%s: param %q is not declared by the Task", where, prm.Name))
				}
			}
			for _, s := range task.Spec.Params {
				if s.Default == nil && !given[s.Name] {
					errs = append(errs, fmt.Errorf("%s: required param %q is not given", where, s.Name))
				}
			}
			bound := map[string]bool{}
			for _, w := range pt.Workspaces {
				bound[w.Name] = true
				if !slices.ContainsFunc(task.Spec.Workspaces, func(d v1.WorkspaceDeclaration) bool { return d.Name == w.Name }) {
					errs = append(errs, fmt.Errorf("%s: workspace %q is not declared by the Task", where, w.Name))
				}
			}
			for _, d := range task.Spec.Workspaces {
				if !d.Optional && !bound[d.Name] {
					errs = append(errs, fmt.Errorf("%s: workspace %q is not bound", where, d.Name))
				}
			}
		}
		errs = append(errs, m.checkResultRefs(p)...)
	}
	for file, pr := range m.pipelineRuns {
		if pr.Spec.PipelineRef == nil {
			continue
		}
		p, ok := m.pipelines[pr.Spec.PipelineRef.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: pipeline %q is not one of these files", file, pr.Spec.PipelineRef.Name))
			continue
		}
		given := map[string]bool{}
		for _, prm := range pr.Spec.Params {
			given[prm.Name] = true
			if !slices.ContainsFunc(p.Spec.Params, func(s v1.ParamSpec) bool { return s.Name == prm.Name }) {
				errs = append(errs, fmt.Errorf("%s: param %q is not declared by pipeline %s", file, prm.Name, p.Name))
			}
		}
		for _, s := range p.Spec.Params {
			if s.Default == nil && !given[s.Name] {
				errs = append(errs, fmt.Errorf("%s: required param %q of pipeline %s is not given", file, s.Name, p.Name))
			}
		}
		bindings := map[string]v1.WorkspaceBinding{}
		for _, w := range pr.Spec.Workspaces {
			bindings[w.Name] = w
		}
		for _, d := range p.Spec.Workspaces {
			if _, ok := bindings[d.Name]; !ok && !d.Optional {
				errs = append(errs, fmt.Errorf("%s: workspace %q of pipeline %s is not bound", file, d.Name, p.Name))
			}
		}
		for _, ts := range pr.Spec.TaskRunSpecs {
			if !slices.ContainsFunc(p.Spec.Tasks, func(pt v1.PipelineTask) bool { return pt.Name == ts.PipelineTaskName }) {
				errs = append(errs, fmt.Errorf("%s: taskRunSpecs names task %q, which pipeline %s does not have", file, ts.PipelineTaskName, p.Name))
			}
		}
		for _, pt := range append(slices.Clone(p.Spec.Tasks), p.Spec.Finally...) {
			var trBindings []v1.WorkspaceBinding
			for _, w := range pt.Workspaces {
				b, ok := bindings[w.Workspace]
				if !ok {
					continue
				}
				// As the PipelineRun reconciler does: one claim per
				// volumeClaimTemplate, shared by every task that binds it.
				if b.VolumeClaimTemplate != nil {
					b = v1.WorkspaceBinding{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "from-template-" + w.Workspace}}
				}
				b.Name = w.Name
				trBindings = append(trBindings, b)
			}
			if err := workspace.ValidateOnlyOnePVCIsUsed(trBindings); err != nil {
				errs = append(errs, fmt.Errorf("%s: the TaskRun of %s: %w (Tekton's default affinity assistant refuses it)", file, pt.Name, err))
			}
		}
	}
	return errs
}

var varRefRE = regexp.MustCompile(`\$\((workspaces|results)\.([^.)\s]+)\.([^.)\s]+)\)`)

// taskVariableRefs checks the $(workspaces.W.X) and $(results.R.path) a
// Task's steps use against what it declares. Tekton's Validate checks
// $(params...) everywhere and $(results...) in scripts only, and leaves a
// misspelt $(workspaces.sorce.path) in an env value as it is at run time.
func taskVariableRefs(task *v1.Task) []error {
	var errs []error
	for _, st := range task.Spec.Steps {
		texts := []string{st.Image, st.Script, st.WorkingDir}
		texts = append(texts, st.Command...)
		texts = append(texts, st.Args...)
		for _, e := range st.Env {
			texts = append(texts, e.Value)
		}
		for _, text := range texts {
			for _, m := range varRefRE.FindAllStringSubmatch(text, -1) {
				kind, name, attr := m[1], m[2], m[3]
				switch kind {
				case "workspaces":
					if !slices.ContainsFunc(task.Spec.Workspaces, func(w v1.WorkspaceDeclaration) bool { return w.Name == name }) {
						errs = append(errs, fmt.Errorf("Task %s, step %s: %s: no workspace %q", task.Name, st.Name, m[0], name))
					} else if !slices.Contains([]string{"path", "bound", "claim", "volume"}, attr) {
						errs = append(errs, fmt.Errorf("Task %s, step %s: %s: workspaces have no %q", task.Name, st.Name, m[0], attr))
					}
				case "results":
					if !slices.ContainsFunc(task.Spec.Results, func(r v1.TaskResult) bool { return r.Name == name }) {
						errs = append(errs, fmt.Errorf("Task %s, step %s: %s: no result %q", task.Name, st.Name, m[0], name))
					} else if attr != "path" {
						errs = append(errs, fmt.Errorf("Task %s, step %s: %s: results have only path", task.Name, st.Name, m[0]))
					}
				}
			}
		}
	}
	return errs
}

// checkResultRefs checks each $(tasks.T.results.R) of a pipeline against the
// results of T's Task, when that Task is one of these files.
func (m *manifests) checkResultRefs(p *v1.Pipeline) []error {
	var errs []error
	taskOf := map[string]*v1.Task{}
	for _, pt := range append(slices.Clone(p.Spec.Tasks), p.Spec.Finally...) {
		if pt.TaskRef != nil {
			if task, ok := m.tasks[pt.TaskRef.Name]; ok {
				taskOf[pt.Name] = task
			}
		}
	}
	var refs []*v1.ResultRef
	for _, pt := range append(slices.Clone(p.Spec.Tasks), p.Spec.Finally...) {
		for _, prm := range pt.Params {
			if exprs, ok := prm.GetVarSubstitutionExpressions(); ok {
				refs = append(refs, v1.NewResultRefs(exprs)...)
			}
		}
	}
	for _, r := range p.Spec.Results {
		if exprs, ok := r.GetVarSubstitutionExpressions(); ok {
			refs = append(refs, v1.NewResultRefs(exprs)...)
		}
	}
	for _, ref := range refs {
		task, ok := taskOf[ref.PipelineTask]
		if !ok {
			continue
		}
		if !slices.ContainsFunc(task.Spec.Results, func(r v1.TaskResult) bool { return r.Name == ref.Result }) {
			errs = append(errs, fmt.Errorf("pipeline %s: $(tasks.%s.results.%s): Task %s has no result %q", p.Name, ref.PipelineTask, ref.Result, task.Name, ref.Result))
		}
	}
	return errs
}

// TestManifestsValidate: every YAML file here decodes strictly into Tekton's
// (or Kubernetes') Go types and passes SetDefaults and Validate, and the
// files agree with each other.
func TestManifestsValidate(t *testing.T) {
	files := yamlFiles(t)
	m, err := check(validationContexts(t), files)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.tasks) != 2 || len(m.pipelines) != 1 || len(m.pipelineRuns) != 1 || len(m.pvcs) != 1 || len(m.podTemplates) != 1 {
		t.Fatalf("decoded %d Tasks, %d Pipelines, %d PipelineRuns, %d claim templates, %d pod templates; want 2, 1, 1, 1, 1", len(m.tasks), len(m.pipelines), len(m.pipelineRuns), len(m.pvcs), len(m.podTemplates))
	}
	task := m.tasks["go-hardware-tests"]
	if task == nil {
		t.Fatal("no Task go-hardware-tests")
	}
	for _, r := range []string{"passed", "failed", "skipped", "junit"} {
		if !slices.ContainsFunc(task.Spec.Results, func(tr v1.TaskResult) bool { return tr.Name == r }) {
			t.Errorf("Task go-hardware-tests lacks the result %q", r)
		}
	}
	for _, p := range task.Spec.Params {
		if strings.TrimSpace(p.Description) == "" {
			t.Errorf("param %q has no description", p.Name)
		}
	}
	// Node placement: the run goes to the board's node, the same way with
	// kubectl create (the PipelineRun) and with tkn (the pod template file).
	for file, pr := range m.pipelineRuns {
		pt := pr.Spec.TaskRunTemplate.PodTemplate
		if pt == nil || len(pt.NodeSelector) == 0 {
			t.Errorf("%s: no nodeSelector in taskRunTemplate.podTemplate", file)
			continue
		}
		for tf, tpl := range m.podTemplates {
			if !tpl.Equals(pt) {
				t.Errorf("%s differs from the podTemplate of %s", tf, file)
			}
		}
	}
}

// TestBrokenManifestsRejected: a copy of each file with an unknown field, a
// missing required field or a bad reference fails the check, with a message
// that names the problem. This proves the check is not vacuous.
func TestBrokenManifestsRejected(t *testing.T) {
	ctxs := validationContexts(t)
	type breakage struct {
		file, what string
		mutate     func(doc map[string]any)
		want       string // in the error
		// other, when set, is a second file that otherMutate changes too.
		other       string
		otherMutate func(doc map[string]any)
	}
	spec := func(doc map[string]any) map[string]any { return doc["spec"].(map[string]any) }
	item := func(v any, i int) map[string]any { return v.([]any)[i].(map[string]any) }
	stepOf := func(doc map[string]any) map[string]any { return item(spec(doc)["steps"], 0) }
	taskNamed := func(doc map[string]any, name string) map[string]any {
		for _, x := range spec(doc)["tasks"].([]any) {
			if pt := x.(map[string]any); pt["name"] == name {
				return pt
			}
		}
		panic("no task " + name)
	}
	breakages := []breakage{
		{"task-go-hardware-tests.yaml", "unknown field", func(d map[string]any) { stepOf(d)["privilige"] = true }, `unknown field "spec.steps[0].privilige"`, "", nil},
		{"task-go-hardware-tests.yaml", "no steps", func(d map[string]any) { delete(spec(d), "steps") }, "missing field(s): spec.steps", "", nil},
		{"task-go-hardware-tests.yaml", "undeclared param", func(d map[string]any) {
			env := stepOf(d)["env"].([]any)
			item(env, 0)["value"] = "$(params.source-dir)"
		}, `non-existent variable`, "", nil},
		{"task-go-hardware-tests.yaml", "undeclared result", func(d map[string]any) {
			env := stepOf(d)["env"].([]any)
			item(env, 0)["value"] = "$(results.passes.path)"
		}, `no result "passes"`, "", nil},
		{"task-prepare-image.yaml", "unknown field", func(d map[string]any) { spec(d)["workspace"] = []any{} }, `unknown field "spec.workspace"`, "", nil},
		{"task-prepare-image.yaml", "step without image", func(d map[string]any) { delete(stepOf(d), "image") }, "missing field(s): spec.steps[0].Image", "", nil},
		{"task-prepare-image.yaml", "undeclared workspace", func(d map[string]any) {
			item(stepOf(d)["env"], 4)["value"] = "$(workspaces.image.path)"
		}, `no workspace "image"`, "", nil},
		{"pipeline-go-hardware-tests.yaml", "unknown field", func(d map[string]any) { taskNamed(d, "run-tests")["runafter"] = []any{"x"} }, `unknown field "spec.tasks[2].runafter"`, "", nil},
		{"pipeline-go-hardware-tests.yaml", "task without taskRef", func(d map[string]any) { delete(taskNamed(d, "run-tests"), "taskRef") }, "expected exactly one, got neither", "", nil},
		{"pipeline-go-hardware-tests.yaml", "undeclared param", func(d map[string]any) {
			item(taskNamed(d, "run-tests")["params"], 2)["value"] = "$(params.package)"
		}, "non-existent variable", "", nil},
		{"pipeline-go-hardware-tests.yaml", "param the Task does not declare", func(d map[string]any) {
			item(taskNamed(d, "run-tests")["params"], 2)["name"] = "package"
		}, `param "package" is not declared by the Task`, "", nil},
		{"pipeline-go-hardware-tests.yaml", "result the Task does not have", func(d map[string]any) {
			item(spec(d)["results"], 0)["value"] = "$(tasks.run-tests.results.pass)"
		}, `has no result "pass"`, "", nil},
		{"pipeline-go-hardware-tests.yaml", "workspace not bound by the run", func(d map[string]any) {
			spec(d)["workspaces"] = append(spec(d)["workspaces"].([]any), map[string]any{"name": "reports"})
			item(taskNamed(d, "run-tests")["workspaces"], 2)["workspace"] = "reports"
		}, `workspace "reports" of pipeline jumpstarter-go-hardware-tests is not bound`, "", nil},
		{"pipeline-go-hardware-tests.yaml", "two volume claims for one TaskRun", func(d map[string]any) {
			spec(d)["workspaces"] = append(spec(d)["workspaces"].([]any), map[string]any{"name": "reports"})
			item(taskNamed(d, "run-tests")["workspaces"], 2)["workspace"] = "reports"
		}, "more than one PersistentVolumeClaim is bound", "pipelinerun-go-hardware-tests.yaml", func(d map[string]any) {
			spec(d)["workspaces"] = append(spec(d)["workspaces"].([]any), map[string]any{
				"name": "reports", "persistentVolumeClaim": map[string]any{"claimName": "reports"},
			})
		}},
		{"pipelinerun-go-hardware-tests.yaml", "unknown field", func(d map[string]any) { spec(d)["podTemplate"] = map[string]any{} }, `unknown field "spec.podTemplate"`, "", nil},
		{"pipelinerun-go-hardware-tests.yaml", "no pipelineRef", func(d map[string]any) { delete(spec(d), "pipelineRef") }, "expected exactly one, got neither", "", nil},
		{"pipelinerun-go-hardware-tests.yaml", "param the Pipeline does not declare", func(d map[string]any) {
			item(spec(d)["params"], 0)["name"] = "repo"
		}, `param "repo" is not declared by pipeline`, "", nil},
		{"pipelinerun-go-hardware-tests.yaml", "required param missing", func(d map[string]any) {
			ps := spec(d)["params"].([]any)
			spec(d)["params"] = slices.DeleteFunc(ps, func(p any) bool { return p.(map[string]any)["name"] == "step-image" })
		}, `required param "step-image"`, "", nil},
		{"pipelinerun-go-hardware-tests.yaml", "timeouts out of order", func(d map[string]any) {
			spec(d)["timeouts"] = map[string]any{"pipeline": "1h", "tasks": "2h"}
		}, "timeouts.tasks", "", nil},
		{"pod-template.yaml", "unknown field", func(d map[string]any) { d["nodeselector"] = map[string]any{} }, `unknown field "nodeselector"`, "", nil},
		{"workspace-template.yaml", "unknown field", func(d map[string]any) { spec(d)["acessModes"] = []any{"ReadWriteOnce"} }, `unknown field "spec.acessModes"`, "", nil},
	}
	for _, b := range breakages {
		t.Run(b.file+"/"+b.what, func(t *testing.T) {
			files := yamlFiles(t)
			var doc map[string]any
			if err := yaml.Unmarshal(files[b.file], &doc); err != nil {
				t.Fatal(err)
			}
			b.mutate(doc)
			broken, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			files[b.file] = broken
			if b.other != "" {
				var other map[string]any
				if err := yaml.Unmarshal(files[b.other], &other); err != nil {
					t.Fatal(err)
				}
				b.otherMutate(other)
				if files[b.other], err = yaml.Marshal(other); err != nil {
					t.Fatal(err)
				}
			}
			_, err = check(ctxs, files)
			if err == nil {
				t.Fatalf("the broken copy passed the check")
			}
			if !strings.Contains(err.Error(), b.want) {
				t.Fatalf("error does not say %q:\n%v", b.want, err)
			}
		})
	}
}
