// scaletestd's helper for scripts/real-coder. It is built inside the copy of Coder's module
// that coder itself is built from, so that it speaks exactly that release's API (codersdk)
// and provisioner protocol (provisioner/echo): nothing here is Coder's code.
//
//	helper setup  --url URL --template NAME --app-url URL --env-out FILE
//	    first user, a session token, and an echo template whose "start" builds have one
//	    agent (token left empty: coderd mints one per build) with one app, the same
//	    template with rich parameters on the classic flow (NAME-params) and with dynamic
//	    parameters from a main.tf (NAME-dynamic); writes CODER_* lines to FILE.
//	helper agents --url URL --pg DSN --coder BIN --dir DIR --app-listen ADDR
//	    one real `coder agent` per agent of every workspace whose latest build is a start,
//	    started when coderd inserts it and stopped when a stop or delete build replaces it;
//	    the app's HTTP server. Runs until SIGTERM, then stops every agent.
package main

import (
	"bytes"
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	_ "github.com/lib/pq"

	"github.com/coder/coder/v2/codersdk"
	"github.com/coder/coder/v2/provisioner/echo"
	"github.com/coder/coder/v2/provisionersdk/proto"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: helper setup|agents [flags]")
	}
	log.SetPrefix("real-coder helper: ")
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	switch os.Args[1] {
	case "setup":
		setup(os.Args[2:])
	case "agents":
		agents(os.Args[2:])
	default:
		log.Fatalf("unknown command %q (setup, agents)", os.Args[1])
	}
}

const (
	adminEmail    = "admin@scaletest.example.com"
	adminUser     = "admin"
	adminPassword = "scaletestd-Real-Coder-1!"
	appSlug       = "hello"
)

// richParameters are the parameters template NAME-params declares, one of each rule a
// value can break: a regex (with its error), options, a number whose bounds carry an error
// message, and a number with bare bounds. The template uses Coder's classic parameter flow
// (`use_classic_parameter_flow`): with dynamic parameters, coderd v2.36.1 evaluates the
// template's Terraform files (an echo template has none), finds no parameter and enforces
// none of these (coderd/dynamicparameters/render.go, resolver.go).
func richParameters() []*proto.RichParameter {
	i32 := func(v int32) *int32 { return &v }
	return []*proto.RichParameter{
		{
			Name: "image", DisplayName: "Image", Type: "string", Mutable: false, Order: 1,
			DefaultValue:    "codercom/enterprise-base:ubuntu",
			ValidationRegex: "^[a-z0-9][a-z0-9._/:-]*$", ValidationError: "an image reference in lowercase",
		},
		{
			Name: "region", DisplayName: "Region", Type: "string", Mutable: false, Order: 2,
			DefaultValue: "eu",
			Options: []*proto.RichParameterOption{
				{Name: "Europe", Value: "eu"},
				{Name: "United States", Value: "us"},
			},
		},
		{
			Name: "memory", DisplayName: "Memory", Type: "number", Mutable: true, Order: 3,
			DefaultValue:  "4",
			ValidationMin: i32(1), ValidationMax: i32(16),
			ValidationError: "{value} GiB: choose {min} to {max}",
		},
		{
			Name: "cpu", DisplayName: "CPU", Type: "number", Mutable: true, Order: 4,
			DefaultValue:  "2",
			ValidationMin: i32(1), ValidationMax: i32(8),
		},
	}
}

// dynamicTerraform is the Terraform of template NAME-dynamic: coderd evaluates it with
// coder/preview, without running Terraform (coderd/parameters_test.go does the same on
// echo), so its parameters are a real dynamic form: options, a number with validation,
// and a parameter whose options follow another's value.
const dynamicTerraform = `terraform {
  required_providers {
    coder = {
      source = "coder/coder"
    }
  }
}

data "coder_workspace_owner" "me" {}

data "coder_parameter" "region" {
  name         = "region"
  display_name = "Region"
  type         = "string"
  default      = "eu"
  mutable      = false
  option {
    name  = "Europe"
    value = "eu"
  }
  option {
    name  = "United States"
    value = "us"
  }
}

data "coder_parameter" "zone" {
  name         = "zone"
  display_name = "Zone"
  type         = "string"
  default      = data.coder_parameter.region.value == "us" ? "us-east" : "eu-west"
  mutable      = false
  dynamic "option" {
    for_each = data.coder_parameter.region.value == "us" ? ["us-east", "us-west"] : ["eu-west", "eu-north"]
    content {
      name  = option.value
      value = option.value
    }
  }
}

data "coder_parameter" "cpu" {
  name         = "cpu"
  display_name = "CPU"
  type         = "number"
  default      = 2
  mutable      = true
  validation {
    min   = 1
    max   = 8
    error = "{value} CPUs: choose {min} to {max}"
  }
}
`

// dynamicParameters are the same parameters as the import declares them (what the rich
// parameters endpoint lists); the form itself comes from dynamicTerraform.
func dynamicParameters() []*proto.RichParameter {
	i32 := func(v int32) *int32 { return &v }
	return []*proto.RichParameter{
		{
			Name: "region", DisplayName: "Region", Type: "string", DefaultValue: "eu", Order: 1,
			Options: []*proto.RichParameterOption{{Name: "Europe", Value: "eu"}, {Name: "United States", Value: "us"}},
		},
		{
			Name: "zone", DisplayName: "Zone", Type: "string", DefaultValue: "eu-west", Order: 2,
			Options: []*proto.RichParameterOption{{Name: "eu-west", Value: "eu-west"}, {Name: "eu-north", Value: "eu-north"}},
		},
		{
			Name: "cpu", DisplayName: "CPU", Type: "number", DefaultValue: "2", Mutable: true, Order: 3,
			ValidationMin: i32(1), ValidationMax: i32(8), ValidationError: "{value} CPUs: choose {min} to {max}",
		},
	}
}

// template is the echo template's source: a start build has one linux agent with an app
// whose health is checked; a stop build keeps the resource without its agent (as a
// Terraform template's `count = start_count` does); a delete build leaves nothing. With
// params, every transition's graph declares richParameters.
func template(appURL string, params []*proto.RichParameter, extra map[string][]byte) ([]byte, error) {
	agent := &proto.Agent{
		Name:            "main",
		OperatingSystem: "linux",
		Architecture:    "amd64",
		Auth:            &proto.Agent_Token{Token: ""},
		Apps: []*proto.App{{
			Slug:         appSlug,
			DisplayName:  "Hello",
			Url:          appURL,
			SharingLevel: proto.AppSharingLevel_OWNER,
			Healthcheck:  &proto.Healthcheck{Url: appURL + "/healthz", Interval: 1, Threshold: 1},
		}},
	}
	graph := func(resources ...*proto.Resource) []*proto.Response {
		return []*proto.Response{{Type: &proto.Response_Graph{Graph: &proto.GraphComplete{Resources: resources, Parameters: params}}}}
	}
	return echo.Tar(&echo.Responses{
		ExtraFiles: extra,
		Parse:      echo.ParseComplete,
		ProvisionGraphMap: map[proto.WorkspaceTransition][]*proto.Response{
			proto.WorkspaceTransition_START:   graph(&proto.Resource{Name: "dev", Type: "null_resource", Agents: []*proto.Agent{agent}}),
			proto.WorkspaceTransition_STOP:    graph(&proto.Resource{Name: "dev", Type: "null_resource"}),
			proto.WorkspaceTransition_DESTROY: graph(),
		},
	})
}

func setup(args []string) {
	fs := flag.NewFlagSet("setup", flag.ExitOnError)
	rawURL := fs.String("url", "http://127.0.0.1:3000", "coderd's access URL")
	name := fs.String("template", "scaletest", "the template's name")
	appURL := fs.String("app-url", "http://127.0.0.1:3999", "the URL the template's app proxies to")
	envOut := fs.String("env-out", "", "where to write the CODER_* lines")
	_ = fs.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	base, err := url.Parse(*rawURL)
	check(err, "--url")
	waitHealthy(ctx, *rawURL)
	client := codersdk.New(base)
	first, err := client.CreateFirstUser(ctx, codersdk.CreateFirstUserRequest{
		Email: adminEmail, Username: adminUser, Password: adminPassword, Trial: false,
	})
	check(err, "creating the first user")
	login, err := client.LoginWithPassword(ctx, codersdk.LoginWithPasswordRequest{Email: adminEmail, Password: adminPassword})
	check(err, "logging in")
	client.SetSessionToken(login.SessionToken)
	token, err := client.CreateToken(ctx, codersdk.Me, codersdk.CreateTokenRequest{Lifetime: 7 * 24 * time.Hour, TokenName: "scaletestd"})
	check(err, "creating a token")

	for _, t := range []struct {
		name    string
		params  []*proto.RichParameter
		classic bool
		extra   map[string][]byte
	}{
		{*name, nil, false, nil},
		{*name + "-params", richParameters(), true, nil},
		{*name + "-dynamic", dynamicParameters(), false, map[string][]byte{"main.tf": []byte(dynamicTerraform)}},
	} {
		tar, err := template(*appURL, t.params, t.extra)
		check(err, "building the echo template")
		tpl := createTemplate(ctx, client, first.OrganizationID, t.name, tar)
		if t.classic {
			classic := true
			_, err = client.UpdateTemplateMeta(ctx, tpl.ID, codersdk.UpdateTemplateMeta{UseClassicParameterFlow: &classic})
			check(err, "setting the classic parameter flow on "+t.name)
		}
	}

	env := fmt.Sprintf("CODER_URL=%s\nCODER_SESSION_TOKEN=%s\nCODER_TEMPLATE=%s\nCODER_PARAMS_TEMPLATE=%s-params\nCODER_DYNAMIC_TEMPLATE=%s-dynamic\nCODER_ORGANIZATION_ID=%s\nCODER_APP=%s\n",
		*rawURL, token.Key, *name, *name, *name, first.OrganizationID, appSlug)
	if *envOut != "" {
		check(os.WriteFile(*envOut, []byte(env), 0o600), "writing "+*envOut)
	}
}

// createTemplate uploads tar as a template version and makes it template name.
func createTemplate(ctx context.Context, client *codersdk.Client, org uuid.UUID, name string, tar []byte) codersdk.Template {
	file, err := client.Upload(ctx, codersdk.ContentTypeTar, bytes.NewReader(tar))
	check(err, "uploading template "+name)
	version, err := client.CreateTemplateVersion(ctx, org, codersdk.CreateTemplateVersionRequest{
		StorageMethod: codersdk.ProvisionerStorageMethodFile,
		FileID:        file.ID,
		Provisioner:   codersdk.ProvisionerTypeEcho,
	})
	check(err, "creating a version of template "+name)
	for version.Job.Status != codersdk.ProvisionerJobSucceeded {
		if version.Job.Status == codersdk.ProvisionerJobFailed || version.Job.Status == codersdk.ProvisionerJobCanceled {
			log.Fatalf("template %s: the version's import job %s: %s", name, version.Job.Status, version.Job.Error)
		}
		select {
		case <-ctx.Done():
			log.Fatalf("template %s: the version's import job is still %s after 3 minutes", name, version.Job.Status)
		case <-time.After(200 * time.Millisecond):
		}
		version, err = client.TemplateVersion(ctx, version.ID)
		check(err, "reading the template version")
	}
	tpl, err := client.CreateTemplate(ctx, org, codersdk.CreateTemplateRequest{Name: name, VersionID: version.ID})
	check(err, "creating template "+name)
	return tpl
}

func waitHealthy(ctx context.Context, base string) {
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			log.Fatalf("coderd at %s did not answer /healthz within 3 minutes (last error: %v)", base, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// desired: the agents of every workspace whose latest build is a start, by agent id.
const desired = `
SELECT wa.id::text, wa.auth_token::text
FROM workspaces w
JOIN workspace_builds wb ON wb.workspace_id = w.id
  AND wb.build_number = (SELECT max(build_number) FROM workspace_builds WHERE workspace_id = w.id)
JOIN workspace_resources wr ON wr.job_id = wb.job_id
JOIN workspace_agents wa ON wa.resource_id = wr.id
WHERE NOT w.deleted AND wb.transition = 'start' AND NOT wa.deleted`

type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func agents(args []string) {
	fs := flag.NewFlagSet("agents", flag.ExitOnError)
	coderURL := fs.String("url", "http://127.0.0.1:3000", "coderd's access URL")
	dsn := fs.String("pg", "", "PostgreSQL connection URL of coderd's database")
	coder := fs.String("coder", "coder", "the coder binary")
	dir := fs.String("dir", "", "where each agent's home and logs go")
	appListen := fs.String("app-listen", "127.0.0.1:3999", "the app's HTTP server")
	_ = fs.Parse(args)

	ln, err := net.Listen("tcp", *appListen)
	check(err, "--app-listen")
	go func() {
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("hello from the real-coder app\n"))
		})
		_ = http.Serve(ln, mux)
	}()

	db, err := sql.Open("postgres", *dsn)
	check(err, "--pg")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	var mu sync.Mutex
	running := map[string]*agentProc{}
	start := func(id, token string) *agentProc {
		home := filepath.Join(*dir, id)
		_ = os.MkdirAll(home, 0o755)
		logf, _ := os.OpenFile(filepath.Join(home, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		cmd := exec.Command(*coder, "agent", "--no-reap")
		cmd.Dir = home
		cmd.Env = append(os.Environ(),
			"HOME="+home,
			"CODER_AGENT_URL="+*coderURL,
			"CODER_AGENT_TOKEN="+token,
			"CODER_AGENT_AUTH=token",
			"CODER_AGENT_LOG_DIR="+home,
			"CODER_AGENT_PROMETHEUS_ADDRESS=127.0.0.1:0",
			"CODER_AGENT_PPROF_ADDRESS=127.0.0.1:0",
			"CODER_AGENT_DEBUG_ADDRESS=127.0.0.1:0",
		)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		p := &agentProc{cmd: cmd, done: make(chan struct{})}
		if err := cmd.Start(); err != nil {
			log.Printf("agent %s: %v", id, err)
			close(p.done)
			return p
		}
		log.Printf("agent %s started (pid %d)", id, cmd.Process.Pid)
		go func() { _ = cmd.Wait(); _ = logf.Close(); close(p.done) }()
		return p
	}
	kill := func(id string, p *agentProc) {
		if p.cmd.Process != nil {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
				<-p.done
			}
		}
		log.Printf("agent %s stopped", id)
	}

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		want := map[string]string{}
		rows, err := db.QueryContext(ctx, desired)
		if err == nil {
			for rows.Next() {
				var id, token string
				if rows.Scan(&id, &token) == nil {
					want[id] = token
				}
			}
			_ = rows.Close()
		} else if ctx.Err() == nil {
			log.Printf("reading agent tokens: %v", err)
		}
		if err == nil {
			mu.Lock()
			for id, p := range running {
				_, keep := want[id]
				exited := false
				select {
				case <-p.done:
					exited = true
				default:
				}
				if !keep || exited {
					delete(running, id)
					go kill(id, p)
				}
			}
			for id, token := range want {
				if _, ok := running[id]; !ok {
					running[id] = start(id, token)
				}
			}
			mu.Unlock()
		}
		select {
		case <-ctx.Done():
			mu.Lock()
			var wg sync.WaitGroup
			for id, p := range running {
				wg.Add(1)
				go func() { defer wg.Done(); kill(id, p) }()
			}
			mu.Unlock()
			wg.Wait()
			return
		case <-tick.C:
		}
	}
}

func check(err error, what string) {
	if err != nil {
		log.Fatalf("%s: %v", what, err)
	}
}
