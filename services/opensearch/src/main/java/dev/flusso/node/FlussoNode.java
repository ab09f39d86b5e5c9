package dev.flusso.node;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.logging.log4j.core.config.Configurator;
import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.cluster.service.ClusterService;
import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.ingest.common.IngestCommonPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * A single-node OpenSearch 2.x started straight from the Maven jars, for flusso's
 * development and CI (no distribution tarball, no Docker).
 *
 * <p>Usage: {@code java -Dopensearch.path.home=DIR -Dopensearch.path.conf=DIR -cp ... dev.flusso.node.FlussoNode [key=value ...]}
 * Every {@code key=value} argument is an OpenSearch setting that overrides the defaults below.
 */
public final class FlussoNode extends Node {

    /** Plugins that the real distribution ships as modules and that flusso relies on. */
    static final List<Class<? extends Plugin>> PLUGINS = Arrays.asList(
        Netty4Plugin.class,          // HTTP + transport layer
        CommonAnalysisPlugin.class,  // analyzers/tokenizers/filters beyond "standard"
        PainlessPlugin.class,        // scripts (update_by_query, script queries)
        MapperExtrasPlugin.class,    // search_as_you_type, scaled_float, rank_feature, ...
        ReindexPlugin.class,         // _reindex, _update_by_query, _delete_by_query
        IngestCommonPlugin.class     // ingest processors (set, lowercase, ...) for `pipeline:`
    );

    private FlussoNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
        super(environment, plugins, true);
    }

    @Override
    protected void configureNodeAndClusterIdStateListener(ClusterService clusterService) {
        // The stock implementation only feeds node/cluster ids into the logging pattern
        // converters of the distribution's log4j setup; not needed here.
    }

    public static void main(String[] args) throws Exception {
        Path home = Paths.get(System.getProperty("opensearch.path.home", ".")).toAbsolutePath().normalize();
        Path conf = Paths.get(System.getProperty("opensearch.path.conf", home.resolve("config").toString()))
            .toAbsolutePath().normalize();

        Settings.Builder builder = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "flusso-dev")
            .put("node.name", "flusso-node")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "9200")
            .put("transport.port", "9300")
            .put("cluster.routing.allocation.disk.threshold_enabled", "false");
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                System.err.println("FlussoNode: arguments must be key=value settings, got: " + arg);
                System.exit(2);
            }
            builder.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        Settings settings = builder.build();
        String nodeName = settings.get("node.name");

        // The real distribution ships these folders (modules are bundled plugins); keep them empty:
        // everything flusso needs is on the classpath and listed in PLUGINS.
        Files.createDirectories(home.resolve("modules"));
        Files.createDirectories(home.resolve("plugins"));
        Files.createDirectories(Paths.get(settings.get("path.logs")));

        Environment env = InternalSettingsPreparer.prepareEnvironment(settings, Collections.emptyMap(), conf, () -> nodeName);
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(nodeName);
        LogConfigurator.configure(env);   // reads conf/log4j2.properties
        Logger logger = LogManager.getLogger(FlussoNode.class);

        final FlussoNode node = new FlussoNode(env, PLUGINS);
        final CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                logger.info("shutdown requested, closing node");
                node.close();
                if (node.awaitClose(20, TimeUnit.SECONDS) == false) {
                    logger.warn("node did not close within 20s");
                }
                logger.info("node closed");
            } catch (Exception e) {
                logger.error("error while closing node", e);
            } finally {
                stopped.countDown();
                Configurator.shutdown(LoggerContextHolder.context());
            }
        }, "flusso-node-shutdown"));

        try {
            node.start();
        } catch (Throwable t) {
            logger.error("node failed to start", t);
            System.exit(1);
        }
        logger.info("flusso node started (OpenSearch {}), http.port={}", org.opensearch.Version.CURRENT, settings.get("http.port"));
        // OpenSearch's threads are daemons: keep the JVM alive until a shutdown signal arrives.
        stopped.await();
    }

    private static final class LoggerContextHolder {
        static org.apache.logging.log4j.core.LoggerContext context() {
            return (org.apache.logging.log4j.core.LoggerContext) LogManager.getContext(false);
        }
    }
}
