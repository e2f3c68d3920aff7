package contract_test

import (
	"fmt"
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rcm-platform/rcm/api"
	"github.com/rcm-platform/rcm/api/contract"
	"go.yaml.in/yaml/v3"
)

// constants returns the package's constants by name, read from its source
// so that a constant added without a check here is noticed.
func constants(t *testing.T) map[string]constant.Value {
	t.Helper()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]constant.Value{}
	for _, f := range pkgs["contract"].Files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, name := range vs.Names {
					out[name.Name] = eval(t, vs.Values[i])
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("found no constants")
	}
	return out
}

// eval evaluates the constant expressions the package uses: literals and
// shifts of them.
func eval(t *testing.T, e ast.Expr) constant.Value {
	t.Helper()
	switch e := e.(type) {
	case *ast.BasicLit:
		return constant.MakeFromLiteral(e.Value, e.Kind, 0)
	case *ast.BinaryExpr:
		x, y := eval(t, e.X), eval(t, e.Y)
		if e.Op == token.SHL || e.Op == token.SHR {
			s, _ := constant.Uint64Val(y)
			return constant.Shift(x, e.Op, uint(s))
		}
		return constant.BinaryOp(x, e.Op, y)
	default:
		t.Fatalf("constant expression %T: teach eval", e)
		return nil
	}
}

// load reads an api file: openapi.yaml, or a schema, whose JSON is YAML too.
func load(t *testing.T, name string) any {
	t.Helper()
	raw, err := fs.ReadFile(api.Files, name)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// at returns the value at the dot-separated path in doc.
func at(t *testing.T, doc any, path string) any {
	t.Helper()
	v := doc
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("%s: %q is not in an object", path, k)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("%s: no %q", path, k)
		}
	}
	return v
}

// number returns a YAML or JSON number as an int64.
func number(t *testing.T, where string, v any) int64 {
	t.Helper()
	switch n := v.(type) {
	case int:
		return int64(n)
	case float64:
		return int64(n)
	default:
		t.Fatalf("%s: got %v (%T), want a number", where, v, v)
		return 0
	}
}

// errorMessages returns every message a response of openapi.yaml may carry
// in "error": the enum or const of each response's schema.
func errorMessages(t *testing.T, doc any) []string {
	t.Helper()
	var out []string
	for name, r := range at(t, doc, "components.responses").(map[string]any) {
		for _, part := range at(t, r, "content.application/json.schema.allOf").([]any) {
			props, ok := part.(map[string]any)["properties"].(map[string]any)
			if !ok {
				continue
			}
			e := props["error"].(map[string]any)
			c, isConst := e["const"].(string)
			enum, isEnum := e["enum"].([]any)
			switch {
			case isConst:
				out = append(out, c)
			case isEnum:
				for _, v := range enum {
					out = append(out, v.(string))
				}
			default:
				t.Errorf("response %s: its error has neither const nor enum", name)
			}
		}
	}
	return out
}

// TestMessagesAreOpenAPIs: the messages openapi.yaml lists are exactly the
// Msg constants, byte for byte.
func TestMessagesAreOpenAPIs(t *testing.T) {
	t.Parallel()
	inSpec := map[string]bool{}
	for _, m := range errorMessages(t, load(t, "openapi.yaml")) {
		inSpec[m] = true
	}
	inGo := map[string]string{}
	for name, v := range constants(t) {
		if strings.HasPrefix(name, "Msg") {
			inGo[constant.StringVal(v)] = name
		}
	}
	for m := range inSpec {
		if _, ok := inGo[m]; !ok {
			t.Errorf("openapi.yaml has the message %q, no Msg constant has it", m)
		}
	}
	for m, name := range inGo {
		if !inSpec[m] {
			t.Errorf("contract.%s = %q is not a message of openapi.yaml", name, m)
		}
	}
}

// TestLimitsAreOpenAPIs: each limit equals every place openapi.yaml and
// the event schemas state it, and every constant that is neither a
// message nor a channel is such a limit.
func TestLimitsAreOpenAPIs(t *testing.T) {
	t.Parallel()
	oapi := load(t, "openapi.yaml")
	campaign := load(t, "schemas/campaign.v1.json")
	optOut := load(t, "schemas/opt_out.v1.json")
	const start, opt = "components.schemas.StartCampaign.properties.", "components.schemas.OptOut.properties."
	type place struct {
		doc  any
		name string
		path string
	}
	oa := func(path string) place { return place{oapi, "openapi.yaml", path} }
	pageSize := func(field string) []place {
		var ps []place
		for _, p := range []string{"/v1/documents/{documentId}/rcm", "/v1/compliance-log", "/v1/activity"} {
			for _, param := range at(t, oapi, "paths."+p+".get.parameters").([]any) {
				if param.(map[string]any)["name"] == "limit" {
					ps = append(ps, place{param, "openapi.yaml " + p + " limit", "schema." + field})
				}
			}
		}
		if len(ps) != 3 {
			t.Fatalf("found %d limit parameters, want 3", len(ps))
		}
		return ps
	}
	limits := map[string][]place{
		"MinTone":           {oa(start + "tone.minLength"), {campaign, "campaign.v1.json", "properties.tone.minLength"}},
		"MaxTone":           {oa(start + "tone.maxLength"), {campaign, "campaign.v1.json", "properties.tone.maxLength"}},
		"MinCadence":        {oa(start + "cadence.minLength"), {campaign, "campaign.v1.json", "properties.cadence.minLength"}},
		"MaxCadence":        {oa(start + "cadence.maxLength"), {campaign, "campaign.v1.json", "properties.cadence.maxLength"}},
		"MaxNotes":          {oa(start + "notes.maxLength"), oa(opt + "notes.maxLength"), {campaign, "campaign.v1.json", "properties.notes.maxLength"}, {optOut, "opt_out.v1.json", "properties.notes.maxLength"}},
		"MinCampaignID":     {oa(opt + "campaignId.minLength")},
		"MaxCampaignID":     {oa(opt + "campaignId.maxLength")},
		"MinIdempotencyKey": {oa("components.parameters.idempotencyKey.schema.minLength")},
		"MaxIdempotencyKey": {oa("components.parameters.idempotencyKey.schema.maxLength")},
		"MinPageSize":       pageSize("minimum"),
		"MaxPageSize":       pageSize("maximum"),
		"DefaultPageSize":   pageSize("default"),
	}
	consts := constants(t)
	for name, places := range limits {
		v, ok := consts[name]
		if !ok {
			t.Errorf("no constant %s", name)
			continue
		}
		want, _ := constant.Int64Val(v)
		for _, p := range places {
			if got := number(t, p.name+" "+p.path, at(t, p.doc, p.path)); got != want {
				t.Errorf("%s %s: got %d, contract.%s is %d", p.name, p.path, got, name, want)
			}
		}
	}
	// MaxBody is stated in prose.
	tooLarge := at(t, oapi, "components.responses.TooLarge.description").(string)
	if want := fmt.Sprintf("bodies over %d KiB", contract.MaxBody>>10); !strings.Contains(tooLarge, want) || contract.MaxBody%1024 != 0 {
		t.Errorf("openapi.yaml TooLarge says %q, want it to say %q", tooLarge, want)
	}
	limits["MaxBody"] = nil
	for name := range consts {
		if _, ok := limits[name]; !ok && !strings.HasPrefix(name, "Msg") && !strings.HasPrefix(name, "Channel") && !strings.HasPrefix(name, "Outcome") {
			t.Errorf("contract.%s is checked against nothing: add where openapi.yaml states it", name)
		}
	}
}

// TestChannelsAreOpenAPIs: the channel names, in order, are the enums of
// openapi.yaml and the event schemas.
func TestChannelsAreOpenAPIs(t *testing.T) {
	t.Parallel()
	oapi := load(t, "openapi.yaml")
	campaign := load(t, "schemas/campaign.v1.json")
	optOut := load(t, "schemas/opt_out.v1.json")
	strs := func(v any) []string {
		var out []string
		for _, x := range v.([]any) {
			out = append(out, x.(string))
		}
		return out
	}
	for _, tc := range []struct {
		where string
		got   any
		want  []string
	}{
		{"openapi.yaml OptOut channel", at(t, oapi, "components.schemas.OptOut.properties.channel.enum"), contract.OptOutChannels()},
		{"campaign.v1.json channel", at(t, campaign, "$defs.channel.enum"), contract.Channels()},
		{"campaign.v1.json opt-out channel", at(t, campaign, "properties.optOuts.items.properties.channel.enum"), contract.OptOutChannels()},
		{"opt_out.v1.json channel", at(t, optOut, "properties.channel.enum"), contract.OptOutChannels()},
	} {
		if got := strs(tc.got); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.where, got, tc.want)
		}
	}
	// Every Channel constant is one of them.
	var named []string
	for name, v := range constants(t) {
		if strings.HasPrefix(name, "Channel") {
			named = append(named, constant.StringVal(v))
		}
	}
	slices.Sort(named)
	want := slices.Sorted(slices.Values(contract.OptOutChannels()))
	if !reflect.DeepEqual(named, want) {
		t.Errorf("Channel constants %v, want %v", named, want)
	}
}

// TestOutcomesAreOpenAPIs: every outcome a channel may take is in the
// outcome request's enum of openapi.yaml, which holds nothing else, and
// every Outcome constant is one of them.
func TestOutcomesAreOpenAPIs(t *testing.T) {
	t.Parallel()
	oapi := load(t, "openapi.yaml")
	var enum []string
	for _, x := range at(t, oapi, "components.schemas.ContactOutcomeRequest.properties.outcome.enum").([]any) {
		enum = append(enum, x.(string))
	}
	var all []string
	for _, ch := range contract.Channels() {
		if len(contract.Outcomes(ch)) == 0 {
			t.Errorf("channel %s takes no outcome", ch)
		}
		all = append(all, contract.Outcomes(ch)...)
	}
	if got, want := slices.Compact(slices.Sorted(slices.Values(all))), slices.Sorted(slices.Values(enum)); !slices.Equal(got, want) {
		t.Errorf("the channels' outcomes are %v, openapi.yaml's enum %v", got, want)
	}
	var named []string
	for name, v := range constants(t) {
		if strings.HasPrefix(name, "Outcome") {
			named = append(named, constant.StringVal(v))
		}
	}
	if got, want := slices.Sorted(slices.Values(named)), slices.Sorted(slices.Values(enum)); !slices.Equal(got, want) {
		t.Errorf("Outcome constants %v, want %v", got, want)
	}
	if contract.Outcomes("fax") != nil {
		t.Error("an unknown channel takes outcomes")
	}
}
