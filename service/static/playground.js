// bertkit playground: plain JavaScript, no build step, no external resources.
// Lists the loaded bundles from GET /v1/models, sends the text to the bundle's endpoint and draws the
// result: class scores as bars, entities highlighted in the text, the answer highlighted in the context.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "class") node.className = value;
      else if (key === "style") node.style.cssText = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child); // strings become text nodes: no HTML injection
    return node;
  };

  // The service reports offsets as Python string indices (code points); JavaScript strings index UTF-16
  // code units, so slice an array of code points instead (emoji and other astral characters stay right).
  const codePoints = (text) => Array.from(text);
  const slice = (chars, start, end) => chars.slice(start, end).join("");

  const ENTITY_HUES = { PER: 210, PERSON: 210, LOC: 135, LOCATION: 135, ORG: 28, MISC: 280, GPE: 160 };
  const hueOf = (type) => {
    const bare = type.replace(/^[BIES]-/, "").toUpperCase();
    if (bare in ENTITY_HUES) return ENTITY_HUES[bare];
    let h = 0;
    for (const c of bare) h = (h * 31 + c.codePointAt(0)) % 360;
    return h;
  };

  const TASKS = {
    "sequence-classification": {
      title: "classification",
      endpoint: "/v1/classify",
      help: "Scores every label of the text (softmax; sigmoid for multi-label models).",
      example: { text: "A gripping, beautifully shot film with a story that stays with you long after the credits." },
      body: (input) => ({ inputs: input.text }),
      render: (input, data) => renderScores(data.results[0]),
    },
    "token-classification": {
      title: "named entities",
      endpoint: "/v1/ner",
      help: "Finds named entities and highlights them in the text with their type.",
      example: { text: "Angela Merkel met Emmanuel Macron in Paris on Monday to discuss Airbus and the European Union." },
      body: (input) => ({ inputs: input.text, aggregation_strategy: "first" }), // whole words, never half a word
      render: (input, data) => renderEntities(input.text, data.results[0]),
    },
    "question-answering": {
      title: "question answering",
      endpoint: "/v1/qa",
      needsQuestion: true,
      help: "Finds the answer to the question in the context and highlights it.",
      example: {
        question: "Who designed the Eiffel Tower?",
        text:
          "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named " +
          "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
      },
      body: (input) => ({ inputs: { question: input.question, context: input.text } }),
      render: (input, data) => renderAnswer(input.text, data.results[0]),
    },
    embedding: {
      title: "sentence embeddings",
      endpoint: "/v1/embed",
      help: "One sentence per line: shows the cosine similarity of every pair of sentences.",
      example: { text: "A man is playing a guitar.\nSomeone is playing an instrument.\nThe stock market fell sharply today." },
      body: (input) => ({ inputs: lines(input.text).slice(0, 16), normalize: true }),
      render: (input, data) => renderSimilarity(lines(input.text).slice(0, 16), data.embeddings),
    },
    "fill-mask": {
      title: "fill-mask",
      endpoint: "/v1/fill-mask",
      help: "Predicts the words hidden behind [MASK].",
      example: { text: "Paris is the [MASK] of France." },
      body: (input) => ({ inputs: input.text, top_k: 5 }),
      render: (input, data) => renderMasks(data.results[0]),
    },
  };

  const lines = (text) => text.split("\n").map((s) => s.trim()).filter(Boolean);
  let models = [];
  let lastExample = null;

  // --- rendering ---------------------------------------------------------------------------------

  function renderScores(scores) {
    const best = Math.max(...scores.map((s) => s.score));
    const bars = el("div", { class: "bars", id: "scores" });
    for (const s of scores) {
      const pct = Math.max(0, Math.min(1, s.score)) * 100;
      const row = el("div", { class: "bar" + (s.score === best ? " top" : ""), "data-label": s.label,
        "data-score": String(s.score), style: "display: contents" });
      row.append(
        el("span", { class: "bar-label" }, s.label),
        el("div", { class: "bar-track" }, el("div", { class: "bar-fill", style: `width: ${pct.toFixed(1)}%` })),
        el("span", { class: "bar-score" }, s.score.toFixed(3)),
      );
      bars.append(row);
    }
    return bars;
  }

  function renderEntities(text, entities) {
    const chars = codePoints(text);
    const box = el("div", { class: "highlighted", id: "highlighted" });
    let at = 0;
    const sorted = [...entities].sort((a, b) => a.start - b.start);
    for (const e of sorted) {
      if (e.start < at) continue; // overlapping spans (aggregation none on windows): keep the first
      box.append(slice(chars, at, e.start));
      const mark = el("mark", { class: "entity", "data-type": e.entity_group, "data-start": String(e.start),
        "data-end": String(e.end), title: `${e.entity_group} ${e.score.toFixed(3)}`,
        style: `--hue: ${hueOf(e.entity_group)}` });
      mark.append(slice(chars, e.start, e.end), el("span", { class: "entity-type" }, e.entity_group));
      box.append(mark);
      at = e.end;
    }
    box.append(slice(chars, at, chars.length));
    const wrap = el("div", {}, box);
    if (!entities.length) {
      wrap.append(el("p", { class: "help" }, "No entities found."));
      return wrap;
    }
    const table = el("table", { class: "entities" },
      el("tr", {}, el("th", {}, "type"), el("th", {}, "text"), el("th", {}, "span"), el("th", {}, "score")));
    for (const e of sorted) {
      table.append(el("tr", {}, el("td", {}, e.entity_group), el("td", {}, e.word),
        el("td", { class: "num" }, `${e.start}–${e.end}`), el("td", { class: "num" }, e.score.toFixed(3))));
    }
    wrap.append(table);
    return wrap;
  }

  function renderAnswer(context, result) {
    const answer = Array.isArray(result) ? result[0] : result;
    const chars = codePoints(context);
    const wrap = el("div");
    if (!answer || answer.answer === "" || answer.end <= answer.start) {
      wrap.append(el("p", { class: "answer-line" }, "No answer found in the text."));
      return wrap;
    }
    wrap.append(el("p", { class: "answer-line", id: "answer" }, "Answer: ", el("strong", {}, answer.answer),
      ` (score ${answer.score.toFixed(3)})`));
    const mark = el("mark", { class: "answer", "data-start": String(answer.start), "data-end": String(answer.end) },
      slice(chars, answer.start, answer.end));
    wrap.append(el("div", { class: "highlighted", id: "highlighted" }, slice(chars, 0, answer.start), mark,
      slice(chars, answer.end, chars.length)));
    return wrap;
  }

  function renderSimilarity(sentences, vectors) {
    const dot = (a, b) => a.reduce((sum, x, i) => sum + x * b[i], 0);
    const table = el("table", { class: "similarity", id: "similarity" });
    table.append(el("tr", {}, el("th", {}, ""), ...sentences.map((_, j) => el("th", {}, `#${j + 1}`))));
    sentences.forEach((s, i) => {
      const row = el("tr", {}, el("th", { title: s }, `#${i + 1} ${s.length > 40 ? s.slice(0, 40) + "…" : s}`));
      vectors.forEach((_, j) => row.append(el("td", { class: "num" }, dot(vectors[i], vectors[j]).toFixed(3))));
      table.append(row);
    });
    return el("div", {}, el("p", { class: "help" }, `${vectors[0] ? vectors[0].length : 0}-dimensional vectors`),
      table);
  }

  function renderMasks(perMask) {
    const wrap = el("div");
    perMask.forEach((predictions, i) => {
      wrap.append(el("p", {}, el("strong", {}, `[MASK] #${i + 1}`)));
      wrap.append(renderScores(predictions.map((p) => ({ label: p.token_str, score: p.score }))));
    });
    return wrap;
  }

  // --- requests ----------------------------------------------------------------------------------

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = $("api-key").value.trim();
    if (key) h.Authorization = `Bearer ${key}`;
    return h;
  }

  async function errorMessage(response) {
    let message = `HTTP ${response.status}`;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message += `: ${body.error.message}`;
    } catch (_) { /* not JSON */ }
    if (response.status === 429) {
      const after = response.headers.get("Retry-After");
      message += after ? ` (retry in ${after} s)` : "";
    }
    if (response.status === 401) message += " (set the API key below)";
    return message;
  }

  function selected() {
    return models.find((m) => m.name === $("task").value);
  }

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = !message;
  }

  async function run() {
    const model = selected();
    if (!model) return;
    const task = TASKS[model.task];
    const input = { text: $("text").value, question: $("question").value };
    if (!input.text.trim() || (task.needsQuestion && !input.question.trim())) {
      showError(task.needsQuestion ? "Type a question and a context." : "Type some text first.");
      return;
    }
    showError("");
    $("run").disabled = true;
    $("status").textContent = "running…";
    const started = performance.now();
    try {
      const response = await fetch(task.endpoint, {
        method: "POST",
        headers: headers(),
        body: JSON.stringify({ ...task.body(input), model: model.name }),
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      const data = await response.json();
      const ms = performance.now() - started;
      $("result").replaceChildren(task.render(input, data));
      $("result").dataset.task = model.task;
      $("timing").textContent = `${data.model} · ${model.precision} · ${model.provider} · ${ms.toFixed(0)} ms`;
      $("status").textContent = "done";
    } catch (err) {
      showError(err.message || String(err));
      $("status").textContent = "failed";
    } finally {
      $("run").disabled = false;
    }
  }

  function fillExample(force) {
    const model = selected();
    if (!model) return;
    const example = TASKS[model.task].example;
    const untouched = !$("text").value.trim() || (lastExample && $("text").value === lastExample.text);
    if (force || untouched) {
      $("text").value = example.text;
      $("question").value = example.question || "";
      lastExample = example;
    }
  }

  function onModelChange() {
    const model = selected();
    if (!model) return;
    const task = TASKS[model.task];
    let labels = model.labels || [];
    if (model.task === "token-classification") {
      labels = [...new Set(labels.filter((l) => l !== "O").map((l) => l.replace(/^[BIES]-/, "")))];
    }
    $("task-help").textContent = task.help + (labels.length ? ` ${model.task === "token-classification" ? "Types" : "Labels"}: ${labels.join(", ")}.` : "");
    $("question-row").hidden = !task.needsQuestion;
    $("text-label").textContent = task.needsQuestion ? "Context" : "Text";
    $("result").replaceChildren();
    $("timing").textContent = "";
    showError("");
    fillExample(false);
  }

  async function loadModels() {
    try {
      const response = await fetch("/v1/models", { headers: headers() });
      if (!response.ok) throw new Error(await errorMessage(response));
      const data = await response.json();
      models = data.models.filter((m) => m.task in TASKS);
    } catch (err) {
      showError(`Cannot list the models: ${err.message || err}`);
      $("status").textContent = "";
      return;
    }
    const picker = $("task");
    picker.replaceChildren(...models.map((m) =>
      el("option", { value: m.name, "data-task": m.task }, `${m.name} — ${TASKS[m.task].title}`)));
    $("status").textContent = models.length ? `${models.length} model(s) loaded` : "no models loaded";
    $("run").disabled = $("example").disabled = !models.length;
    if (models.length) onModelChange();
  }

  $("task").addEventListener("change", onModelChange);
  $("run").addEventListener("click", run);
  $("example").addEventListener("click", () => fillExample(true));
  for (const id of ["text", "question"]) {
    $(id).addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) run();
      else if (id === "question" && event.key === "Enter") run();
    });
  }
  $("api-key").value = sessionStorage.getItem("bertkit-api-key") || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("bertkit-api-key", $("api-key").value.trim());
    loadModels();
  });
  loadModels();
})();
