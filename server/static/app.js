// tingxie browser client: microphone -> AudioWorklet (16 kHz PCM s16le) -> websocket
// /v1/stream (protocol v1, docs/protocol.md) -> live partial text and a list of finals;
// or a recording -> the OpenAI-compatible HTTP API -> its segments as finals. The
// transcript downloads as TXT or SRT.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = { start: $("start"), stop: $("stop"), state: $("state"), error: $("error"),
               partial: $("partial"), finals: $("finals"), meta: $("meta"), level: $("level"),
               punctuation: $("punctuation"), itn: $("itn"), hotwords: $("hotwords"), file: $("file"),
               txt: $("download-txt"), srt: $("download-srt") };
  const transcript = []; // {start, end, text} of every final shown
  let ws = null, ctx = null, media = null, node = null, source = null, sink = null;
  let ended = false;

  function setState(state, text) {
    ui.state.dataset.state = state;
    ui.state.textContent = text || state;
    document.body.dataset.state = state;
  }

  function showError(message) {
    ui.error.textContent = message;
    setState("error");
  }

  function fmt(seconds) {
    const m = Math.floor(seconds / 60);
    const s = (seconds - 60 * m).toFixed(2).padStart(5, "0");
    return `${m}:${s}`;
  }

  function streamUrl() {
    const page = new URL(window.location.href);
    const url = new URL("/v1/stream", page);
    url.protocol = page.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("sample_rate", "16000");
    url.searchParams.set("encoding", "pcm_s16le");
    url.searchParams.set("channels", "1");
    const key = page.searchParams.get("api_key"); // browsers cannot send headers on websockets
    if (key) url.searchParams.set("api_key", key);
    return url.toString();
  }

  function addFinal(msg) {
    transcript.push({ start: msg.start, end: msg.end, text: msg.text });
    ui.txt.disabled = ui.srt.disabled = false;
    const li = document.createElement("li");
    li.className = "final";
    li.dataset.channel = msg.channel;
    li.dataset.utterance = msg.utterance;
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = `${fmt(msg.start)} – ${fmt(msg.end)}`;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = msg.text;
    text.title = msg.raw_text ? `confidence ${msg.confidence} · recognised: ${msg.raw_text}` : `confidence ${msg.confidence}`;
    li.append(time, text);
    ui.finals.append(li);
  }

  function onMessage(event) {
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    switch (msg.type) {
      case "ready":
        ui.meta.textContent = `model ${msg.model} · session ${msg.session} · ${msg.sample_rate} Hz ${msg.encoding}`;
        startAudio().catch((e) => fail(`microphone: ${e.message || e}`));
        break;
      case "partial":
        ui.partial.textContent = msg.text;
        break;
      case "final":
        ui.partial.textContent = "";
        if (msg.text) addFinal(msg);
        break;
      case "done":
        ui.meta.textContent += ` · ${msg.audio_seconds.toFixed(1)} s of audio`;
        setState("done");
        break;
      case "error":
        showError(`server error (${msg.code}): ${msg.message}`);
        break;
    }
  }

  async function startAudio() {
    ctx = new AudioContext();
    await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    node = new AudioWorkletNode(ctx, "pcm16k", { processorOptions: { frameMs: 100 } });
    node.port.onmessage = (e) => {
      if (e.data.type === "audio") {
        if (ws && ws.readyState === WebSocket.OPEN && !ended) ws.send(e.data.buffer);
        const s = new Int16Array(e.data.buffer);
        let peak = 0;
        for (let i = 0; i < s.length; i++) peak = Math.max(peak, Math.abs(s[i]));
        ui.level.value = peak / 32768;
      } else if (e.data.type === "flushed") {
        finishStream();
      }
    };
    source = ctx.createMediaStreamSource(media);
    sink = ctx.createGain();
    sink.gain.value = 0; // keeps the graph pulled without playing the microphone back
    source.connect(node);
    node.connect(sink);
    sink.connect(ctx.destination);
    if (ctx.state !== "running") await ctx.resume();
    setState("listening");
    ui.stop.disabled = false;
  }

  function stopAudio() {
    if (media) media.getTracks().forEach((t) => t.stop());
    if (ctx) ctx.close().catch(() => {});
    media = ctx = node = source = sink = null;
    ui.level.value = 0;
  }

  function finishStream() {
    if (ws && ws.readyState === WebSocket.OPEN && !ended) ws.send(JSON.stringify({ type: "end" }));
    ended = true;
    stopAudio();
  }

  function fail(message) {
    showError(message);
    stopAudio();
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    ui.start.disabled = false;
    ui.stop.disabled = true;
  }

  async function start() {
    ui.error.textContent = "";
    ui.partial.textContent = "";
    ui.start.disabled = true;
    ended = false;
    setState("connecting");
    try {
      media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } catch (e) {
      fail(`microphone unavailable: ${e.message || e.name}`);
      return;
    }
    ws = new WebSocket(streamUrl());
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      setState("connected", "waiting for the server");
      ws.send(JSON.stringify({ type: "start", sample_rate: 16000, encoding: "pcm_s16le", channels: 1, ...textOptions() }));
    };
    ws.onmessage = onMessage;
    ws.onerror = () => { if (ui.state.dataset.state !== "error") showError("connection failed"); };
    ws.onclose = (e) => {
      stopAudio();
      ui.start.disabled = false;
      ui.stop.disabled = true;
      if (e.code !== 1000 && ui.state.dataset.state !== "error") {
        showError(`connection closed (code ${e.code}${e.reason ? ": " + e.reason : ""})`);
      } else if (ui.state.dataset.state !== "error") {
        setState("closed", ui.state.dataset.state === "done" ? "done" : "closed");
      }
      ws = null;
    };
  }

  function stop() {
    ui.stop.disabled = true;
    setState("finishing", "finishing…");
    if (node) node.port.postMessage({ cmd: "flush" }); // sends the last samples, then "end"
    else finishStream();
  }

  function textOptions() {
    const out = { punctuation: ui.punctuation.checked, itn: ui.itn.checked };
    const words = ui.hotwords.value.split("\n").map((w) => w.trim()).filter(Boolean);
    if (words.length) out.hotwords = words;
    return out;
  }

  function srtTime(seconds) {
    const ms = Math.max(0, Math.round(seconds * 1000));
    const p = (n, w) => String(n).padStart(w, "0");
    return `${p(Math.floor(ms / 3600000), 2)}:${p(Math.floor(ms / 60000) % 60, 2)}:${p(Math.floor(ms / 1000) % 60, 2)},${p(ms % 1000, 3)}`;
  }

  function download(kind) {
    const body = kind === "srt"
      ? transcript.map((f, i) => `${i + 1}\n${srtTime(f.start)} --> ${srtTime(f.end)}\n${f.text}\n`).join("\n")
      : transcript.map((f) => f.text + "\n").join("");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([body], { type: kind === "srt" ? "application/x-subrip" : "text/plain" }));
    a.download = `transcript.${kind}`;
    document.body.append(a);
    a.click();
    a.remove();
  }

  // A recording goes to the HTTP API (its port comes from /healthz), as verbose_json:
  // its segments become finals. The page's toggles apply only to streaming; the API
  // formats text as the server's flags say, and the hotword box becomes its prompt.
  async function transcribeFile(file) {
    ui.error.textContent = "";
    setState("uploading", `transcribing ${file.name}…`);
    try {
      const health = await (await fetch("/healthz")).json();
      if (!health.http_port) throw new Error("this server has no HTTP API (start it with --http-port)");
      const api = new URL(window.location.href);
      api.port = String(health.http_port);
      api.pathname = "/v1/audio/transcriptions";
      api.search = "";
      const form = new FormData();
      form.append("file", file);
      form.append("model", health.model);
      form.append("response_format", "verbose_json");
      const words = ui.hotwords.value.split("\n").map((w) => w.trim()).filter(Boolean);
      if (words.length) form.append("prompt", words.join(" "));
      const headers = {};
      const key = new URL(window.location.href).searchParams.get("api_key");
      if (key) headers.Authorization = `Bearer ${key}`;
      const r = await fetch(api, { method: "POST", body: form, headers });
      const body = await r.json();
      if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
      for (const seg of body.segments || []) addFinal({ ...seg, channel: 0, utterance: seg.id, confidence: Math.exp(seg.avg_logprob).toFixed(3) });
      ui.meta.textContent = `model ${health.model} · ${file.name} · ${body.duration.toFixed(1)} s of audio`;
      setState("done", "done");
    } catch (e) {
      showError(`transcription failed: ${e.message || e}`);
    }
  }

  ui.txt.addEventListener("click", () => download("txt"));
  ui.srt.addEventListener("click", () => download("srt"));
  ui.file.addEventListener("change", () => { if (ui.file.files.length) transcribeFile(ui.file.files[0]); });
  ui.start.addEventListener("click", start);
  ui.stop.addEventListener("click", stop);
  if (!window.AudioWorkletNode || !navigator.mediaDevices) {
    showError("this browser cannot capture audio here (AudioWorklet and getUserMedia need https or localhost)");
    ui.start.disabled = true;
  }
})();
