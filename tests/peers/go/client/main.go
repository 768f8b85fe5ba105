// A minimal MCP client over Streamable HTTP with TLS, standard library
// only: initialize, the initialized notification, tools/list, `add` a few
// times, `refuse`, ping, then a DELETE. Prints a JSON report.
//
// Usage: client -url https://127.0.0.1:N/mcp -ca CERT -name CLIENT -calls N
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

func main() {
	url := flag.String("url", "", "endpoint")
	ca := flag.String("ca", "", "certificate to trust")
	name := flag.String("name", "go-mcp-client", "client name")
	calls := flag.Int("calls", 3, "add calls")
	flag.Parse()

	pem, err := os.ReadFile(*ca)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		// HTTP/1.1 (see the server).
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}

	session := ""
	id := 0
	outcomes := map[string]int{}
	send := func(method string, params any, notify bool) map[string]any {
		msg := map[string]any{"jsonrpc": "2.0", "method": method}
		if params != nil {
			msg["params"] = params
		}
		if !notify {
			id++
			msg["id"] = id
		}
		body, _ := json.Marshal(msg)
		req, _ := http.NewRequest(http.MethodPost, *url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
		}
		resp, err := client.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		if s := resp.Header.Get("Mcp-Session-Id"); s != "" {
			session = s
		}
		data, _ := io.ReadAll(resp.Body)
		if notify {
			return nil
		}
		var out map[string]any
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			// An event stream: the response is the data of the event that
			// carries our id.
			for _, line := range strings.Split(string(data), "\n") {
				line = strings.TrimRight(line, "\r")
				if !strings.HasPrefix(line, "data:") {
					continue
				}
				payload := strings.TrimPrefix(line, "data:")
				var m map[string]any
				if json.Unmarshal([]byte(strings.TrimSpace(payload)), &m) == nil && m["id"] != nil {
					out = m
				}
			}
			if out == nil {
				panic(fmt.Sprintf("%s: no response in the stream: %s", method, data))
			}
			return out
		}
		if err := json.Unmarshal(data, &out); err != nil {
			panic(fmt.Sprintf("%s: %s", method, data))
		}
		return out
	}
	outcome := func(key string, r map[string]any) {
		if res, ok := r["result"].(map[string]any); ok {
			if e, _ := res["isError"].(bool); e {
				outcomes[key+":tool_error"]++
			} else {
				outcomes[key+":ok"]++
			}
		} else {
			outcomes[key+":error"]++
		}
	}

	init := send("initialize", map[string]any{
		"protocolVersion": "2025-06-18",
		"capabilities":    map[string]any{},
		"clientInfo":      map[string]any{"name": *name, "version": "1.0.0"},
	}, false)
	outcome("initialize", init)
	send("notifications/initialized", nil, true)
	who := send("tools/call", map[string]any{"name": "whoami", "arguments": map[string]any{}}, false)
	serverPid := 0.0
	if res, ok := who["result"].(map[string]any); ok {
		if sc, ok := res["structuredContent"].(map[string]any); ok {
			serverPid, _ = sc["result"].(float64)
		}
	}
	outcome("whoami", who)
	outcome("tools/list", send("tools/list", map[string]any{}, false))
	for i := 0; i < *calls; i++ {
		outcome("add", send("tools/call", map[string]any{"name": "add", "arguments": map[string]any{"a": i, "b": 2}}, false))
	}
	outcome("refuse", send("tools/call", map[string]any{"name": "refuse", "arguments": map[string]any{"reason": "no"}}, false))
	outcome("ping", send("ping", nil, false))
	req, _ := http.NewRequest(http.MethodDelete, *url, nil)
	req.Header.Set("Mcp-Session-Id", session)
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
	}
	report, _ := json.Marshal(map[string]any{
		"client_pid": os.Getpid(), "server_pid": int(serverPid), "outcomes": outcomes, "session": session,
	})
	fmt.Println(string(report))
}
