"""TREX-Ray: automated LLM fine-tuning by tree search on a Ray cluster.

The rooms, and how data flows through them (each arrow carries one typed object):

    cli, config        launch.py's command line -> ``Config`` (every knob, validated before Ray starts)
    run                the driver: checks inputs, starts Ray, wires the actors to Tune, writes the
                       outputs
    rundir             the run directory, opened for one driver alone (new, or resumed with its
                       ledger checked)
    actors             the two Ray actors: ``TreeState`` (hosts search.state) and ``Researcher``
    searcher           the Tune ``Searcher`` bridge: Tune asks for trials, the TreeState hands out nodes;
                       ``SteeringScheduler`` applies steering commands and stops trials in Tune's loop

    search/            the tree, with no Ray: ``Plan`` (plan), ``Tree`` + UCT (tree), the ledger
                       (ledger) and its event schema (events), the single writer ``SearchState``
                       (state), what crosses to the Researcher ``ExpansionRequest`` -> ``Proposal``
                       (request), what comes back from a trial ``TrialOutcome`` (outcome), the GPU
                       memory check (fit), the rule-based reading of a trial's wrong answers
                       (bad_cases), successive halving and the compute budget (halving), the final
                       selection (selection), the user's limits on plans (limits), spend per node
                       and branch (spend), and live steering: the commands (steering) and their
                       inbox in the run's storage (inbox)
    researcher/        who proposes plans, with no Ray: the expert rules (builtin) and the LLM
                       (llm: context, research + tools + catalog, answers, diagnosis); and who
                       drafts a user's task file from a requirement (taskdraft)
    executor/          one trial: ``TrialContext`` (context), data + fine-tune + dev score (execute,
                       train, models), multi-worker DeepSpeed (distributed), the Tune trainable
                       (trial) and the end-of-run test scores and merged export (final)
    recipes/           typed data operators and their execution with ``datasets``
    report/            ``RunData`` (data), report.html (page), report.md (markdown), the console's
                       live view (live), the model card and Hub upload (hub)
    guard/             what keeps a run safe: one driver per run with a lease a successor can take
                       over, run ids that cannot collide (lock), no secret out and nothing unsafe to
                       a terminal (redact), the embedded Ray on loopback only (endpoints), LLM and
                       dataset text fenced as data (untrusted)
    storage, trackers, llm_client, tasks
                       shared services: run storage on any pyarrow filesystem, Tune logger
                       callbacks, the OpenAI-compatible client, the task a run targets (an FT-Bench
                       task or the user's own task file, ftbench.taskfile)

    Config ──> run ──> TreeState(search.state) ──ExpansionRequest──> Researcher ──Proposal──┐
                 │          ▲      └──Handout(node, Plan)──> searcher ──> Tune ──> executor │
                 │          └──────────────TrialOutcome─────────────────────────────┘      │
                 └──> report (RunData from the ledger)        plans recorded <─────────────┘

``search/`` and ``researcher/`` never import Ray; ``executor/`` never imports ``researcher/``;
there are no import circles (tests/test_house.py checks all three).
"""
