import { useEffect, useState, useCallback } from "react";
import {
  Alert, AlertTitle, Box, Button, Chip, Dialog, DialogActions, DialogContent, DialogTitle, FormControlLabel,
  MenuItem, Radio, RadioGroup, Stack, Switch, Tab, Table, TableBody, TableCell, TableHead, TableRow, Tabs,
  TextField, Typography, IconButton, Tooltip,
} from "@mui/material";
import { commandLine, dotenv, handlerArgs, handlerName, health, interceptArgs, mask } from "./cli.js";
import { CONNECTION } from "./teledock.js";

// ErrorBox shows a CLI error with its hint; never a stack.
function ErrorBox({ error, action }) {
  if (!error) return null;
  return (
    <Alert severity="error" action={action} role="alert">
      <AlertTitle>{error.message}</AlertTitle>
      {error.hint}
    </Alert>
  );
}

const lightColor = { ok: "success", pending: "warning", error: "error", off: "default" };
function Light({ label, state }) {
  return <Chip label={`${label}: ${state}`} color={lightColor[state]} variant="outlined" aria-label={`${label} ${state}`} />;
}

export function App({ teledock }) {
  const [tab, setTab] = useState(0);
  const [status, setStatus] = useState(null);
  const [watchError, setWatchError] = useState(null);
  const [handlers, setHandlers] = useState({}); // intercept name -> handler container we started
  useEffect(() => teledock.watchStatus(setStatus, setWatchError), [teledock]);
  const h = health(status);
  return (
    <Box sx={{ p: 2 }}>
      <Stack direction="row" spacing={2} alignItems="center" sx={{ mb: 1 }}>
        <Typography variant="h3">teledock</Typography>
        <Light label="API server" state={h.apiServer} />
        <Light label="traffic-manager" state={h.trafficManager} />
        <Light label="DNS" state={h.dns} />
      </Stack>
      <ErrorBox error={watchError} />
      <Tabs value={tab} onChange={(_, v) => setTab(v)} sx={{ mb: 2 }}>
        <Tab label="Connection" />
        <Tab label="Workloads" disabled={!h.running} />
        <Tab label="Intercepts" disabled={!h.running} />
        <Tab label="Logs" />
      </Tabs>
      {tab === 0 && <ConnectionView teledock={teledock} status={status} health={h} />}
      {tab === 1 && <WorkloadsView teledock={teledock} onHandler={(n, c) => setHandlers({ ...handlers, [n]: c })} />}
      {tab === 2 && <InterceptsView teledock={teledock} status={status} handlers={handlers} />}
      {tab === 3 && <LogsView teledock={teledock} />}
    </Box>
  );
}

function ConnectionView({ teledock, status, health: h }) {
  const [contexts, setContexts] = useState([]);
  const [context, setContext] = useState("");
  const [namespaces, setNamespaces] = useState([]);
  const [namespace, setNamespace] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  useEffect(() => {
    teledock.contexts().then((d) => {
      setContexts(d.contexts || []);
      const cur = (d.contexts || []).find((c) => c.current);
      if (cur) setContext(cur.name);
    }, setError);
  }, [teledock]);
  useEffect(() => {
    if (!context) return;
    teledock.namespaces(context).then((d) => setNamespaces(d.namespaces || []), setError);
  }, [teledock, context]);
  const act = (f) => async () => {
    setBusy(true);
    setError(null);
    try {
      await f();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const d = (status && status.daemon) || {};
  return (
    <Stack spacing={2} sx={{ maxWidth: 640 }}>
      <TextField select label="Kubernetes context" value={context} onChange={(e) => setContext(e.target.value)} disabled={h.running}
        SelectProps={{ inputProps: { "aria-label": "Kubernetes context" } }}>
        {contexts.map((c) => <MenuItem key={c.name} value={c.name}>{c.name} ({c.server})</MenuItem>)}
      </TextField>
      <TextField select label="Namespace" value={namespace} onChange={(e) => setNamespace(e.target.value)} disabled={h.running}
        SelectProps={{ inputProps: { "aria-label": "Namespace" } }}>
        {namespaces.map((n) => <MenuItem key={n} value={n}>{n}</MenuItem>)}
      </TextField>
      <Stack direction="row" spacing={2}>
        <Button variant="contained" disabled={busy || h.running} onClick={act(() => teledock.connect(context, namespace))}>Connect</Button>
        <Button variant="outlined" disabled={busy || !h.running} onClick={act(() => teledock.quit())}>Quit</Button>
      </Stack>
      <ErrorBox error={error} action={error && error.code === "NO_MANAGER" &&
        <Button color="inherit" disabled={busy} onClick={act(() => teledock.install(context))}>Install the traffic-manager</Button>} />
      {h.running && (
        <Typography aria-label="connection">
          Connected to {d.kubernetes_context}, namespace {d.namespace} ({d.status}; transport {d.transport || "?"})
        </Typography>
      )}
      {h.detail && <Alert severity="warning">{h.detail}</Alert>}
    </Stack>
  );
}

function WorkloadsView({ teledock, onHandler }) {
  const [workloads, setWorkloads] = useState([]);
  const [error, setError] = useState(null);
  const [dialog, setDialog] = useState(null);
  const load = useCallback(() => teledock.list().then((d) => setWorkloads(d.workloads || []), setError), [teledock]);
  useEffect(() => { load(); }, [load]);
  return (
    <Stack spacing={2}>
      <ErrorBox error={error} />
      <Table size="small" aria-label="workloads">
        <TableHead><TableRow><TableCell>Workload</TableCell><TableCell>Kind</TableCell><TableCell>State</TableCell><TableCell /></TableRow></TableHead>
        <TableBody>
          {workloads.map((w) => (
            <TableRow key={w.kind + w.name}>
              <TableCell>{w.name}</TableCell>
              <TableCell>{w.kind}</TableCell>
              <TableCell>{w.state}</TableCell>
              <TableCell>
                <Button size="small" aria-label={`Intercept ${w.name}`} disabled={w.state === "intercepted"} onClick={() => setDialog(w)}>Intercept</Button>
              </TableCell>
            </TableRow>
          ))}
        </TableBody>
      </Table>
      {dialog && <InterceptDialog teledock={teledock} workload={dialog} onClose={(done) => { setDialog(null); if (done) { onHandler(done.name, done.container); load(); } }} />}
    </Stack>
  );
}

function InterceptDialog({ teledock, workload, onClose }) {
  const [form, setForm] = useState({ workload: workload.name, name: workload.name, localPort: "8080", servicePort: "", handler: "image", image: "", container: "", env: true, mounts: true });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
  const args = interceptArgs(form, CONNECTION);
  const submit = async () => {
    setBusy(true);
    setError(null);
    try {
      await teledock.run(args);
      if (form.handler === "image" && form.image) {
        await teledock.startHandler(handlerArgs(form, CONNECTION));
      }
      onClose({ name: form.name, container: form.handler === "image" && form.image ? handlerName(form) : "" });
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog open onClose={() => onClose(null)} fullWidth maxWidth="sm">
      <DialogTitle>Intercept {workload.name}</DialogTitle>
      <DialogContent>
        <Stack spacing={2} sx={{ mt: 1 }}>
          <TextField label="Intercept name" value={form.name} onChange={set("name")} />
          <TextField label="Local port" value={form.localPort} onChange={set("localPort")} />
          <TextField label="Service port (name or number, optional)" value={form.servicePort} onChange={set("servicePort")} />
          <RadioGroup row value={form.handler} onChange={set("handler")}>
            <FormControlLabel value="image" control={<Radio />} label="Run an image" />
            <FormControlLabel value="container" control={<Radio />} label="A running container" />
            <FormControlLabel value="compose" control={<Radio />} label="A compose service" />
          </RadioGroup>
          {form.handler === "image" && <TextField label="Handler image" value={form.image} onChange={set("image")} />}
          {form.handler === "container" && <TextField label="Container name" value={form.container} onChange={set("container")} />}
          {form.handler === "compose" && (
            <Alert severity="info">Mark the service with <code>x-teledock: {"{"}intercept: {workload.name}{"}"}</code> and run <code>teledock compose up</code> in the project's folder.</Alert>
          )}
          <FormControlLabel control={<Switch checked={form.env} onChange={set("env")} />} label="Import the pod's environment into the handler" />
          <FormControlLabel control={<Switch checked={form.mounts} onChange={set("mounts")} />} label="Mount the pod's volumes in the handler" />
          <TextField label="Equivalent command" InputProps={{ readOnly: true }} multiline
            value={commandLine(args) + (form.handler === "image" && form.image ? "\n" + commandLine(handlerArgs(form, CONNECTION)) : "")} />
          <ErrorBox error={error} />
        </Stack>
      </DialogContent>
      <DialogActions>
        <Button onClick={() => onClose(null)}>Cancel</Button>
        <Button variant="contained" disabled={busy || form.handler === "compose"} onClick={submit}>Start intercept</Button>
      </DialogActions>
    </Dialog>
  );
}

function InterceptsView({ teledock, status, handlers }) {
  const [error, setError] = useState(null);
  const [envOf, setEnvOf] = useState(null);
  const list = (status && status.daemon && status.daemon.intercept_list) || [];
  const leave = async (name) => {
    setError(null);
    try {
      // The handler first: its container uses the intercept's volumes, which leave removes.
      const c = handlers[name];
      if (c) await teledock.removeContainer(c);
      await teledock.leave(name);
    } catch (e) {
      setError(e);
    }
  };
  return (
    <Stack spacing={2}>
      <ErrorBox error={error} />
      {list.length === 0 && <Typography>No intercepts.</Typography>}
      <Table size="small" aria-label="intercepts">
        <TableBody>
          {list.map((ic) => (
            <TableRow key={ic.name}>
              <TableCell>{ic.name}</TableCell>
              <TableCell>{ic.owner}</TableCell>
              <TableCell>
                <Button size="small" aria-label={`Environment of ${ic.name}`} onClick={() => setEnvOf(ic.name)}>Environment</Button>
                <Button size="small" aria-label={`Leave ${ic.name}`} onClick={() => leave(ic.name)}>Leave</Button>
              </TableCell>
            </TableRow>
          ))}
        </TableBody>
      </Table>
      {envOf && <EnvView teledock={teledock} name={envOf} />}
    </Stack>
  );
}

function EnvView({ teledock, name }) {
  const [env, setEnv] = useState(null);
  const [shown, setShown] = useState({});
  const [error, setError] = useState(null);
  const [copied, setCopied] = useState("");
  useEffect(() => { teledock.env(name).then((d) => setEnv(d.environment || {}), setError); }, [teledock, name]);
  const copy = async () => {
    const text = dotenv(env);
    try {
      await navigator.clipboard.writeText(text);
      setCopied("Copied as .env");
    } catch {
      setCopied(text); // no clipboard: show it to copy by hand
    }
  };
  if (error) return <ErrorBox error={error} />;
  if (!env) return null;
  return (
    <Box>
      <Typography variant="h4">Environment of {name}</Typography>
      <Table size="small" aria-label={`environment of ${name}`}>
        <TableBody>
          {Object.keys(env).sort().map((k) => (
            <TableRow key={k}>
              <TableCell>{k}</TableCell>
              <TableCell aria-label={`value of ${k}`}>{shown[k] ? env[k] : mask(env[k])}</TableCell>
              <TableCell>
                <Tooltip title={shown[k] ? "Hide" : "Reveal"}>
                  <IconButton size="small" aria-label={`${shown[k] ? "Hide" : "Reveal"} ${k}`} onClick={() => setShown({ ...shown, [k]: !shown[k] })}>
                    {shown[k] ? "🙈" : "👁"}
                  </IconButton>
                </Tooltip>
              </TableCell>
            </TableRow>
          ))}
        </TableBody>
      </Table>
      <Button onClick={copy}>Copy as .env</Button>
      {copied && <Typography component="pre" sx={{ whiteSpace: "pre-wrap" }}>{copied}</Typography>}
    </Box>
  );
}

function LogsView({ teledock }) {
  const [text, setText] = useState("");
  const load = useCallback(() => teledock.logs().then(setText), [teledock]);
  useEffect(() => { load(); }, [load]);
  return (
    <Stack spacing={1}>
      <Button onClick={load} sx={{ alignSelf: "start" }}>Refresh</Button>
      <Box component="pre" aria-label="daemon log" sx={{ fontSize: 12, whiteSpace: "pre-wrap", maxHeight: 480, overflow: "auto" }}>
        {text || "No daemon container."}
      </Box>
    </Stack>
  );
}
