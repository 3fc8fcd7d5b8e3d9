"""The OpenSearch under the integration tests is real: version, modules, templates, bulk, search,
aggregations, and the Alerting, Index Management and Job Scheduler plugins.

The local node (deploy/opensearch-local) builds Alerting and Index Management from their upstream
sources when it finds them; a clone without the sources skips the plugin test, saying how to get
them (see deploy/opensearch-local/README.md).
"""

from __future__ import annotations

import pytest
from opensearchpy import helpers

pytestmark = pytest.mark.integration

# Modules every backend (local node or the official image) has, by REST-visible capability.
REQUIRED_CAPABILITIES = {
    "analysis-common": ("analyzer", "fingerprint"),
    "mapper-extras": ("mapping", "scaled_float"),
    "lang-painless": ("script", "painless"),
    "lang-mustache": ("search_template", "mustache"),
    "ingest-common": ("processor", "grok"),
    "parent-join": ("mapping", "join"),
}


def _plugin_names(client) -> set[str]:
    nodes = client.nodes.info(metric="plugins")["nodes"]
    names: set[str] = set()
    for node in nodes.values():
        for entry in node.get("plugins", []) + node.get("modules", []):
            names.add(entry["name"])
            names.add(entry.get("classname", ""))
    return names


def test_version_is_opensearch_2_19(opensearch):
    info = opensearch.info()
    assert info["version"]["distribution"] == "opensearch"
    assert info["version"]["number"].startswith("2.19."), info["version"]


def test_expected_modules_are_loaded(opensearch):
    names = _plugin_names(opensearch)
    # Modules are listed by name; an embedded node (as this project's once was) lists classpath
    # plugins by class name.
    expected = {
        "transport-netty4": "org.opensearch.transport.Netty4Plugin",
        "analysis-common": "org.opensearch.analysis.common.CommonAnalysisPlugin",
        "mapper-extras": "org.opensearch.index.mapper.MapperExtrasPlugin",
        "lang-painless": "org.opensearch.painless.PainlessPlugin",
        "lang-mustache": "org.opensearch.script.mustache.MustachePlugin",
        "reindex": "org.opensearch.index.reindex.ReindexPlugin",
        "ingest-common": "org.opensearch.ingest.common.IngestCommonPlugin",
        "parent-join": "org.opensearch.join.ParentJoinPlugin",
    }
    missing = [module for module, cls in expected.items() if module not in names and cls not in names]
    assert not missing, f"modules missing: {missing}; loaded: {sorted(names)}"
    # Loaded in name only is not enough: each module's feature answers.
    processors = opensearch.nodes.info(metric="ingest")["nodes"]
    types = {p["type"] for node in processors.values() for p in node["ingest"]["processors"]}
    assert {"grok", "date", "rename", "script"} <= types


def test_alerting_ism_and_job_scheduler_are_loaded_and_answer(opensearch, alerting_plugin, ism_plugin):
    components = {p["component"] for p in opensearch.cat.plugins(format="json")}
    assert {"opensearch-alerting", "opensearch-index-management", "opensearch-job-scheduler"} <= components
    # Loaded in name only is not enough: each plugin's API answers.
    stats = opensearch.transport.perform_request("GET", "/_plugins/_alerting/stats")
    assert stats["nodes_on_schedule"] == len(opensearch.nodes.info()["nodes"]), stats
    policies = opensearch.transport.perform_request("GET", "/_plugins/_ism/policies", params={"size": 1})
    assert "total_policies" in policies, policies


def test_painless_and_mustache_run(opensearch, index_prefix):
    index = f"{index_prefix}-scripts"
    opensearch.index(index=index, id="1", body={"n": 20, "who": "alice"}, refresh=True)
    found = opensearch.search(
        index=index,
        body={"script_fields": {"twice": {"script": {"lang": "painless", "source": "doc['n'].value * 2"}}}},
    )
    assert found["hits"]["hits"][0]["fields"]["twice"] == [40]
    rendered = opensearch.render_search_template(
        body={"source": '{"query": {"term": {"who": "{{name}}"}}}', "params": {"name": "alice"}}
    )
    assert rendered["template_output"] == {"query": {"term": {"who": "alice"}}}


def test_template_bulk_search_and_terms_aggregation(opensearch, index_prefix):
    opensearch.indices.put_index_template(
        name=f"{index_prefix}-deliveries",
        body={
            "index_patterns": [f"{index_prefix}-deliveries-*"],
            "template": {
                "settings": {"number_of_shards": 1, "number_of_replicas": 0},
                "mappings": {
                    "dynamic": "strict",
                    "properties": {
                        "@timestamp": {"type": "date"},
                        "recipient": {"type": "keyword"},
                        "smtp": {"properties": {"reply": {"properties": {"code": {"type": "keyword"}}}}},
                        "message": {"type": "text"},
                    },
                },
            },
        },
    )
    index = f"{index_prefix}-deliveries-2026.11.27"
    codes = ["250", "250", "550", "250", "421", "550", "250"]
    actions = [
        {
            "_index": index,
            "_id": f"doc-{i}",
            "_source": {
                "@timestamp": f"2026-11-27T03:{i:02d}:00Z",
                "recipient": f"user{i % 3}@example.org",
                "smtp": {"reply": {"code": code}},
                "message": f"delivery attempt {i} answered {code}",
            },
        }
        for i, code in enumerate(codes)
    ]
    ok, errors = helpers.bulk(opensearch, actions, refresh="wait_for", raise_on_error=False)
    assert (ok, errors) == (len(codes), [])

    # The template applied: strict mapping with keyword fields, and it rejects unknown fields.
    mapping = opensearch.indices.get_mapping(index=index)[index]["mappings"]
    assert mapping["dynamic"] == "strict"
    assert mapping["properties"]["recipient"]["type"] == "keyword"
    ok, errors = helpers.bulk(
        opensearch, [{"_index": index, "_source": {"unknown": 1}}], raise_on_error=False, refresh="wait_for"
    )
    assert ok == 0 and errors[0]["index"]["error"]["type"] == "strict_dynamic_mapping_exception"

    result = opensearch.search(
        index=f"{index_prefix}-deliveries-*",
        body={
            "size": 10,
            "query": {"match": {"message": "answered"}},
            "aggs": {"codes": {"terms": {"field": "smtp.reply.code"}}},
        },
    )
    assert result["hits"]["total"]["value"] == len(codes)
    buckets = {b["key"]: b["doc_count"] for b in result["aggregations"]["codes"]["buckets"]}
    assert buckets == {"250": 4, "550": 2, "421": 1}

    failed = opensearch.count(index=index, body={"query": {"prefix": {"smtp.reply.code": "5"}}})
    assert failed["count"] == 2


def test_index_prefix_cleanup_removes_what_a_test_made(opensearch, index_prefix):
    from opensearch_harness import cleanup_prefix

    opensearch.indices.put_index_template(
        name=f"{index_prefix}-tpl", body={"index_patterns": [f"{index_prefix}-x-*"], "template": {}}
    )
    opensearch.cluster.put_component_template(name=f"{index_prefix}-comp", body={"template": {}})
    opensearch.index(index=f"{index_prefix}-x-1", body={"a": 1}, refresh=True)
    other = f"t-other-{index_prefix[-8:]}"
    opensearch.index(index=other, body={"a": 1}, refresh=True)
    try:
        cleanup_prefix(opensearch, index_prefix)
        assert not opensearch.indices.exists(index=f"{index_prefix}-x-1")
        assert not opensearch.indices.exists_index_template(name=f"{index_prefix}-tpl")
        assert not opensearch.cluster.exists_component_template(name=f"{index_prefix}-comp")
        assert opensearch.indices.exists(index=other), "cleanup must not touch other prefixes"
    finally:
        opensearch.indices.delete(index=other, ignore=[404])
