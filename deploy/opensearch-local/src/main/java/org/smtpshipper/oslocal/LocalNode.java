package org.smtpshipper.oslocal;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * A single-node OpenSearch started in this JVM, with the modules a log-ingest workload needs loaded
 * as classpath plugins (the way OpenSearch's own integration tests run them).
 *
 * <p>Arguments are OpenSearch settings as {@code --key=value}; they override the defaults below.
 * {@code --plugin=fully.qualified.PluginClass} adds a classpath plugin beside those in plugins.txt.
 * Exit codes: 0 after a clean stop, 2 for a usage/plugin/port error, 3 when the node failed to start.
 */
public final class LocalNode {

    private LocalNode() {}

    /** Node's plugin-taking constructor is protected: this subclass opens it. */
    static final class EmbeddedNode extends Node {
        EmbeddedNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) {
        try {
            // After a clean stop the JVM is already shutting down: calling System.exit then would
            // block on the running shutdown hooks, so only errors exit explicitly.
            run(args);
        } catch (Fatal e) {
            System.err.println("opensearch-local: FATAL: " + e.getMessage());
            if (e.getCause() != null) {
                e.getCause().printStackTrace(System.err);
            }
            System.exit(e.code);
        }
    }

    static final class Fatal extends RuntimeException {
        final int code;

        Fatal(int code, String message, Throwable cause) {
            super(message, cause);
            this.code = code;
        }
    }

    static int run(String[] args) {
        Map<String, String> settings = defaults();
        List<String> pluginNames = new ArrayList<>(readPluginList());
        for (String arg : args) {
            if (!arg.startsWith("--") || !arg.contains("=")) {
                throw new Fatal(2, "arguments are --setting=value or --plugin=Class, got: " + arg, null);
            }
            String key = arg.substring(2, arg.indexOf('='));
            String value = arg.substring(arg.indexOf('=') + 1);
            if (key.equals("plugin")) {
                pluginNames.add(value);
            } else {
                settings.put(key, value);
            }
        }
        List<Class<? extends Plugin>> plugins = loadPlugins(pluginNames);

        String host = settings.get("network.host");
        int port = Integer.parseInt(settings.get("http.port"));
        requireFreePort(host, port);

        Path home = Paths.get(settings.get("path.home")).toAbsolutePath();
        Path config = home.resolve("config");
        Settings.Builder builder = Settings.builder();
        settings.forEach(builder::put);
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            builder.build(), Collections.emptyMap(), config, () -> settings.get("node.name"));
        try {
            if (Files.exists(config.resolve("log4j2.properties"))) {
                LogConfigurator.configure(environment);
            } else {
                LogConfigurator.configureWithoutConfig(environment.settings());
            }
        } catch (Exception e) {
            throw new Fatal(2, "could not configure logging from " + config + ": " + e, e);
        }

        final Node node;
        try {
            node = new EmbeddedNode(environment, plugins);
        } catch (Exception e) {
            throw new Fatal(3, "could not build the node: " + e, e);
        }
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(30, TimeUnit.SECONDS);
            } catch (IOException | InterruptedException e) {
                System.err.println("opensearch-local: error while stopping: " + e);
            } finally {
                stopped.countDown();
            }
        }, "opensearch-local-shutdown"));
        try {
            node.start();
        } catch (Exception e) {
            throw new Fatal(3, "node failed to start: " + e, e);
        }
        System.out.println("opensearch-local: node started, http://" + host + ":" + port
            + " plugins=" + pluginNames + " data=" + settings.get("path.data"));
        try {
            stopped.await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return 0;
    }

    static Map<String, String> defaults() {
        Map<String, String> s = new LinkedHashMap<>();
        s.put("cluster.name", "smtp-shipper-local");
        s.put("node.name", "local-node");
        s.put("path.home", ".");
        s.put("path.data", "data");
        s.put("path.logs", "run/logs");
        s.put("network.host", "127.0.0.1");
        s.put("http.port", "9200");
        // Transport is unused by a single node; a range lets two local nodes (dev + tests) coexist.
        s.put("transport.port", "9300-9399");
        s.put("discovery.type", "single-node");
        s.put("node.max_local_storage_nodes", "1");
        // A laptop disk is often >90% full: never turn indices read-only for that.
        s.put("cluster.routing.allocation.disk.threshold_enabled", "false");
        s.put("search.max_buckets", "65535");
        s.put("action.auto_create_index", "true");
        s.put("bootstrap.memory_lock", "false");
        // Single node: replicas would never be assigned and keep health yellow.
        s.put("cluster.default_number_of_replicas", "0");
        return s;
    }

    static List<String> readPluginList() {
        List<String> names = new ArrayList<>();
        try (InputStream in = LocalNode.class.getResourceAsStream("/plugins.txt")) {
            if (in == null) {
                throw new Fatal(2, "plugins.txt is missing from the launcher jar", null);
            }
            BufferedReader reader = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
            String line;
            while ((line = reader.readLine()) != null) {
                line = line.strip();
                if (!line.isEmpty() && !line.startsWith("#")) {
                    names.add(line);
                }
            }
        } catch (IOException e) {
            throw new Fatal(2, "cannot read plugins.txt: " + e, e);
        }
        return names;
    }

    static List<Class<? extends Plugin>> loadPlugins(List<String> names) {
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        List<String> missing = new ArrayList<>();
        for (String name : names) {
            try {
                Class<?> cls = Class.forName(name, false, LocalNode.class.getClassLoader());
                if (!Plugin.class.isAssignableFrom(cls)) {
                    throw new Fatal(2, name + " is not an OpenSearch Plugin", null);
                }
                plugins.add(cls.asSubclass(Plugin.class));
            } catch (ClassNotFoundException | LinkageError e) {
                missing.add(name + " (" + e + ")");
            }
        }
        if (!missing.isEmpty()) {
            throw new Fatal(2, "plugin classes not on the classpath: " + missing
                + " - rebuild with deploy/opensearch-local/start (mvn package) or fix plugins.txt", null);
        }
        return plugins;
    }

    static void requireFreePort(String host, int port) {
        try (ServerSocket socket = new ServerSocket()) {
            socket.setReuseAddress(true);
            socket.bind(new InetSocketAddress(InetAddress.getByName(host), port));
        } catch (IOException e) {
            throw new Fatal(2, "port " + host + ":" + port + " is already in use (" + e.getMessage()
                + "); stop what listens there or choose another OPENSEARCH_PORT", e);
        }
    }
}
