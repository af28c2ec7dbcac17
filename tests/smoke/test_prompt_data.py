"""Prompt data: text, JSONL, JSON, CSV, Parquet and `datasets` folders; conversations and system prompts;
held-out prompts for evaluation; row columns (an ``answer``) reaching the reward, aligned per completion."""

import csv
import json
import operator
from importlib import resources

import pytest

import langrl
from langrl.config import PromptsConfig, load_config
from langrl.envs.prompts import build_prompt_sets, read_prompt_data
from langrl.errors import ConfigError, RewardError
from langrl.lm.evaluate import evaluate_lm
from langrl.models import tiny_lm
from langrl.rewards import LengthReward, WeightedSum, score
from langrl.rewards.answers import exact_answer, last_number
from langrl.rewards.arithmetic import TRAIN_ROWS, arithmetic_rows, jsonl
from langrl.run.io import read_jsonl

ROWS = [{"prompt": "What is 1 + 1?", "answer": 2}, {"prompt": "What is 2 * 3?", "answer": 6},
        {"prompt": "What is 9 - 4?", "answer": 5}, {"prompt": "What is 7 + 8?", "answer": 15}]
TEXTS = [row["prompt"] for row in ROWS]
ANSWERS = {row["prompt"]: row["answer"] for row in ROWS}
OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_lm(seed=0).tokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def write_csv(path, rows, delimiter=","):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def prompt_sets(tokenizer, **prompts):
    return build_prompt_sets(PromptsConfig(**prompts), tokenizer, seed=0)


def test_each_file_format_loads_its_rows_as_prompts_with_columns(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "rows.parquet")
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    files = {"jsonl": write_jsonl(tmp_path / "rows.jsonl", ROWS), "json": str(tmp_path / "rows.json"),
             "csv": write_csv(tmp_path / "rows.csv", ROWS), "tsv": write_csv(tmp_path / "rows.tsv", ROWS, "\t"),
             "parquet": str(tmp_path / "rows.parquet")}
    for kind, file in files.items():
        train, evaluation = prompt_sets(tokenizer, file=file, template="Q: {item}")
        assert train.texts == [f"Q: {t}" for t in TEXTS], kind
        assert train.columns["prompt"] == TEXTS, kind
        # CSV and TSV cells are text; the others keep JSON's and Parquet's numbers.
        expected = [str(r["answer"]) for r in ROWS] if kind in ("csv", "tsv") else [r["answer"] for r in ROWS]
        assert train.columns["answer"] == expected, kind
        assert evaluation is train, "nothing held out: evaluation uses the training prompts"
        assert tokenizer.decode(train.ids[0]).endswith("user: Q: What is 1 + 1?\n<|bos|>assistant: ")
    # A text file stays one prompt per line, with no columns.
    (tmp_path / "lines.txt").write_text("cats\n\n dogs \n")
    train, _ = prompt_sets(tokenizer, file=str(tmp_path / "lines.txt"), template="About {item}.")
    assert train.texts == ["About cats.", "About dogs."] and train.columns == {}


def test_a_jsonl_or_csv_file_set_on_a_text_config_gives_its_prompts_not_its_raw_lines(tmp_path):
    jsonl_file = write_jsonl(tmp_path / "mine.jsonl", [{"prompt": "the sea"}, {"prompt": "a cat"}])
    config = load_config("configs/positive_sentiment.yaml", [f"prompts.file={jsonl_file}", "prompts.eval_fraction=0"])
    data, _ = read_prompt_data(config.prompts)
    assert data.prompts == ["the sea", "a cat"]
    csv_file = write_csv(tmp_path / "mine.csv", [{"topic": "the sea", "id": "1"}])
    config = load_config("configs/positive_sentiment.yaml", [f"prompts.file={csv_file}", "prompts.column=topic",
                                                             "prompts.eval_fraction=0"])
    assert read_prompt_data(config.prompts)[0].prompts == ["the sea"], "the header row is not a prompt"


def test_a_missing_column_is_a_one_line_error_naming_the_columns_found(tmp_path, tokenizer):
    file = write_jsonl(tmp_path / "qa.jsonl", [{"question": "2 + 2?", "answer": 4}])
    with pytest.raises(ConfigError) as e:
        prompt_sets(tokenizer, file=file)
    message = str(e.value)
    assert "\n" not in message and "no column 'prompt' or 'messages'" in message
    assert "columns found: question, answer" in message and "prompts.column" in message
    with pytest.raises(ConfigError, match=r"no column 'query' \(columns found: question, answer\)"):
        prompt_sets(tokenizer, file=write_csv(tmp_path / "qa.csv", [{"question": "2 + 2?", "answer": "4"}]),
                    column="query")
    train, _ = prompt_sets(tokenizer, file=file, column="question")
    assert train.texts == ["2 + 2?"]
    with pytest.raises(ConfigError, match="row 2: column 'prompt' holds int 5, not a prompt"):
        prompt_sets(tokenizer, file=write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"prompt": 5}]))
    with pytest.raises(ConfigError, match="line 2 is not JSON"):
        (tmp_path / "broken.jsonl").write_text('{"prompt": "ok"}\n{"prompt": \n')
        prompt_sets(tokenizer, file=str(tmp_path / "broken.jsonl"))


def test_conversations_take_the_system_prompt_unless_they_have_their_own(tmp_path, tokenizer):
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                          {"role": "user", "content": "What is 2 + 2?"}], "answer": 4},
            {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "3 * 3?"}],
             "answer": 9}]
    train, _ = prompt_sets(tokenizer, file=write_jsonl(tmp_path / "chat.jsonl", rows), system="Reply with a number.")
    assert train.texts == ["What is 2 + 2?", "3 * 3?"], "a conversation's text is its last message"
    assert train.columns["answer"] == [4, 9]
    assert tokenizer.decode(train.ids[0]) == ("<|bos|>system: Reply with a number.\n<|bos|>user: Hi\n"
                                              "<|bos|>assistant: Hello\n<|bos|>user: What is 2 + 2?\n"
                                              "<|bos|>assistant: ")
    assert tokenizer.decode(train.ids[1]).startswith("<|bos|>system: Be terse.\n<|bos|>user: 3 * 3?")
    # Text prompts get the system prompt too; without a chat template it is a paragraph before the prompt.
    text_rows = write_jsonl(tmp_path / "text.jsonl", ROWS[:1])
    train, _ = prompt_sets(tokenizer, file=text_rows, system="Reply with a number.")
    assert tokenizer.decode(train.ids[0]).startswith("<|bos|>system: Reply with a number.\n<|bos|>user: What")
    train, _ = prompt_sets(tokenizer, file=text_rows, system="Reply with a number.", chat=False)
    assert tokenizer.decode(train.ids[0]) == "Reply with a number.\n\nWhat is 1 + 1?"
    with pytest.raises(ConfigError, match="the prompts are conversations, used as they are; drop the template"):
        prompt_sets(tokenizer, file=write_jsonl(tmp_path / "chat2.jsonl", rows), template="Q: {item}")
    with pytest.raises(ConfigError, match="row 1: a message .* is not"):
        prompt_sets(tokenizer, file=write_jsonl(tmp_path / "chat3.jsonl", [{"messages": [{"role": "user"}]}]))


def test_datasets_folders_give_their_splits_for_training_and_evaluation(tmp_path, tokenizer, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:3]),
                          "test": datasets.Dataset.from_list(ROWS[3:])}).save_to_disk(str(tmp_path / "saved"))
    train, evaluation = prompt_sets(tokenizer, file=str(tmp_path / "saved"), eval_split="test")
    assert train.texts == TEXTS[:3] and train.columns["answer"] == [2, 6, 5]
    assert evaluation.texts == TEXTS[3:] and evaluation.columns["answer"] == [15]
    with pytest.raises(ConfigError, match=r"no split 'validation' \(splits: train, test\)"):
        prompt_sets(tokenizer, file=str(tmp_path / "saved"), eval_split="validation")
    # A folder of data files, split by file name, read with datasets.load_dataset (offline).
    (tmp_path / "files").mkdir()
    write_jsonl(tmp_path / "files" / "train.jsonl", ROWS[1:])
    write_jsonl(tmp_path / "files" / "test.jsonl", ROWS[:1])
    train, evaluation = prompt_sets(tokenizer, dataset=str(tmp_path / "files"), eval_split="test")
    assert train.texts == TEXTS[1:] and evaluation.texts == TEXTS[:1] and evaluation.columns["answer"] == [2]
    with pytest.raises(ConfigError, match="rows.jsonl' is a single file, not a dataset with splits"):
        prompt_sets(tokenizer, file=write_jsonl(tmp_path / "rows.jsonl", ROWS), eval_split="test")


def test_eval_fraction_holds_out_the_same_rows_for_every_seed(tmp_path, tokenizer):
    rows = [{"prompt": f"q{i}", "answer": i} for i in range(20)]
    config = PromptsConfig(file=write_jsonl(tmp_path / "rows.jsonl", rows), eval_fraction=0.25)
    train, evaluation = build_prompt_sets(config, tokenizer, seed=0)
    assert len(evaluation.texts) == 5 and len(train.texts) == 15
    assert sorted(train.texts + evaluation.texts, key=lambda t: int(t[1:])) == [r["prompt"] for r in rows]
    assert evaluation.columns["answer"] == [int(t[1:]) for t in evaluation.texts], "columns move with their rows"
    assert build_prompt_sets(config, tokenizer, seed=7)[1].texts == evaluation.texts
    with pytest.raises(ConfigError, match="at most one of prompts.eval_file or prompts.eval_fraction"):
        load_config({"model": "tiny", "reward": {"type": "vader"},
                     "prompts": {"file": "x.jsonl", "eval_file": "y.jsonl", "eval_fraction": 0.1}})


def test_braces_in_a_set_template_are_text():
    base = {"model": "tiny", "prompts": {"items": ["a"]}, "reward": {"type": "vader"}}
    assert load_config(base, ["prompts.template={item}"]).prompts.template == "{item}"
    assert load_config(base, ['prompts.template="Q: {item}"']).prompts.template == "Q: {item}"
    with pytest.raises(ConfigError, match="YAML read this as a mapping or list, not text: quote it"):
        load_config(base, ["prompts.template=Q: {item}"])


def record_reward(tmp_path):
    """A python reward file whose function takes ``answer`` and appends what it saw to a JSONL log."""
    (tmp_path / "seen.py").write_text(
        "import json\n\n"
        "def column_aware(prompts, completions, answer, log):\n"
        "    with open(log, 'a') as f:\n"
        "        f.write(json.dumps({'prompts': prompts, 'answer': list(answer), 'n': len(completions)}) + '\\n')\n"
        "    return [0.0 for _ in completions]\n")
    return {"type": "python", "function": f"{tmp_path / 'seen.py'}:column_aware",
            "kwargs": {"log": str(tmp_path / "seen.jsonl")}}


def test_columns_reach_a_column_aware_reward_per_completion_and_evaluation_uses_held_out_prompts(
        tmp_path, lm_config):
    held_out = [{"prompt": "What is 5 + 5?", "answer": 10}, {"prompt": "What is 3 * 4?", "answer": 12}]
    config = lm_config(steps=2, sampling={"max_new_tokens": 4, "group_size": 3},
                       prompts={"file": write_jsonl(tmp_path / "train.jsonl", ROWS), "per_step": 2,
                                "eval_file": write_jsonl(tmp_path / "test.jsonl", held_out), "eval_count": 2},
                       reward=[record_reward(tmp_path), {"type": "length", "target": 4, "unit": "chars"}])
    result = langrl.train(config, output=tmp_path / "run")
    calls = read_jsonl(tmp_path / "seen.jsonl")
    group = config["sampling"]["group_size"]
    train_calls = [c for c in calls if c["n"] == 2 * group]
    assert len(train_calls) == config["steps"]
    all_answers = {**ANSWERS, **{r["prompt"]: r["answer"] for r in held_out}}
    for call in calls:
        assert call["n"] == len(call["answer"]) == len(call["prompts"])
        assert call["answer"] == [all_answers[p] for p in call["prompts"]], "each completion gets its row's answer"
    for call in train_calls:
        assert all(p in ANSWERS for p in call["prompts"]), "training uses the training prompts"
        groups = [call["prompts"][i:i + group] for i in range(0, len(call["prompts"]), group)]
        assert all(len(set(g)) == 1 for g in groups), "a group of completions shares its prompt"
    eval_rows = read_jsonl(result.run_dir / "eval_samples.jsonl")
    assert {r["phase"] for r in eval_rows} == {"before", "after"}
    assert {r["prompt"] for r in eval_rows} == {r["prompt"] for r in held_out}
    report = evaluate_lm(config, "tiny", num_prompts=10)
    assert report["prompts"] == 2 and {s["prompt"] for s in report["samples"]} == {r["prompt"] for r in held_out}


def test_rewards_without_columns_keep_working_and_required_columns_are_checked(tmp_path, lm_config):
    seen = []

    def old(prompts, completions):
        return [1.0] * len(completions)

    def every(prompts, completions, **columns):
        seen.append(columns)
        return [float(a) for a in columns["answer"]]

    def optional(prompts, completions, answer=None, missing="default"):
        seen.append((answer, missing))
        return [0.0] * len(completions)

    columns = {"answer": [3, 4], "prompt": ["a", "b"]}
    assert score(old, ["a", "b"], ["x", "y"], columns) == [1.0, 1.0]
    assert score(WeightedSum([old, every, optional, LengthReward(1, "chars")], [1, 1, 1, 1]), ["a", "b"],
                 ["x", "y"], columns) == [4.0, 5.0]
    assert seen == [columns, ([3, 4], "default")]
    with pytest.raises(RewardError, match="takes the prompt column.s. answer, which were not given"):
        score(exact_answer, ["a"], ["1"])
    with pytest.raises(ConfigError, match="takes the prompt column.s. answer, which the prompts lack"):
        langrl.train(lm_config(reward={"type": "python", "function": "langrl.rewards.answers:exact_answer"}),
                     output=tmp_path / "run")
    # A built-in reward on a table: the columns are there, and nothing reaches it.
    result = langrl.train(lm_config(steps=1, prompts={"file": write_jsonl(tmp_path / "rows.jsonl", ROWS),
                                                      "per_step": 2, "eval_count": 0}), output=tmp_path / "run2")
    assert len(read_jsonl(result.run_dir / "metrics.jsonl")) == 1


def test_exact_answer_compares_the_last_number():
    assert last_number("7 * 8 = 56.") == 56 and last_number("-3 or 1,234") == 1234 and last_number("none") is None
    completions = ["The answer is 56", "56.0", "55", "no idea", "about -4", "1,000"]
    answers = [56, "56", 56, 56, "#### -4", 1000]
    assert exact_answer([""] * 6, completions, answers) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_the_bundled_arithmetic_task_is_generated_and_held_out(tokenizer):
    rows = arithmetic_rows()
    data = resources.files("langrl") / "data"
    assert (data / "arithmetic.jsonl").read_text() == jsonl(rows[:TRAIN_ROWS])
    assert (data / "arithmetic_test.jsonl").read_text() == jsonl(rows[TRAIN_ROWS:])
    for row in rows:
        a, op, b = row["prompt"].removeprefix("What is ").rstrip("?").split()
        assert OPERATIONS[op](int(a), int(b)) == row["answer"], row
    config = load_config("configs/arithmetic_verifiable.yaml")
    train, evaluation = build_prompt_sets(config.prompts, tokenizer, config.seed)
    assert len(train.texts) == TRAIN_ROWS and len(evaluation.texts) == len(rows) - TRAIN_ROWS
    assert not set(train.texts) & set(evaluation.texts)
    assert tokenizer.decode(train.ids[0]).startswith(f"<|bos|>system: {config.prompts.system}\n")
