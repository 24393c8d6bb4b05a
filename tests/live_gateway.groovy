// A Py4J gateway into QuPath's core, for the tests of qpsam.live: what QuPath's Py4J extension
// (qupath-extension-py4j) serves from a running QuPath, without the GUI.
//
// Usage (tests/live_host.py starts it): java -cp groovy.jar:QuPath/lib/app/*:py4j.jar MAIN live_gateway.groovy
//     PROJECT.qpproj IMAGE PORT TOKEN
//   MAIN is groovy.ui.GroovyMain, or qpsam.harness.RunGroovy on QuPath 0.7.0 (Java 25: asmResolving=false).
//   IMAGE is the entry's id or name: it plays the image open in the viewer. PORT 0 takes a free port; TOKEN "-" = none.
//
// The entry point has the names and signatures of the extension's QuPathEntryPoint (and of QP, which it extends)
// for the calls qpsam uses, and runs QuPath's own ImageData, hierarchy, GeoJSON (GsonTools) and ImageJ code.
// The viewer is not here: getQuPath() is null and fireHierarchyUpdate() fires the hierarchy's event only.
//
// Stdout: "READY <port>" once the gateway listens. Stdin, one command a line, each answered on stdout:
//   stop  -> shuts the gateway down (the JVM and its hierarchy stay): "STOPPED"
//   save  -> entry.saveImageData + project.syncChanges: "SAVED <number of objects>"
//   open IMAGE -> another entry becomes the open image (as opening it in the viewer): "OPENED <image name>"
//   quit  -> exits
import java.awt.image.BufferedImage
import javax.imageio.ImageIO
import com.google.gson.JsonElement
import ij.io.FileSaver
import py4j.GatewayServer
import qupath.imagej.tools.IJTools
import qupath.lib.images.ImageData
import qupath.lib.images.servers.ImageServer
import qupath.lib.images.servers.ImageServerProvider
import qupath.lib.io.FeatureCollection
import qupath.lib.io.GsonTools
import qupath.lib.objects.PathObject
import qupath.lib.objects.hierarchy.PathObjectHierarchy
import qupath.lib.projects.Project
import qupath.lib.projects.ProjectIO
import qupath.lib.projects.ProjectImageEntry
import qupath.lib.regions.RegionRequest
import qupath.lib.scripting.QP

class QuPathEntryPoint {
    static Project<BufferedImage> project
    static ProjectImageEntry<BufferedImage> entry
    static ImageData<BufferedImage> imageData

    static String getExtensionVersion() { 'qpsam-test-gateway' }

    static Object getQuPath() { null }

    static Project<BufferedImage> getProject() { project }

    static ProjectImageEntry<BufferedImage> getProjectEntry() { entry }

    static ImageData<BufferedImage> getCurrentImageData() { imageData }

    static PathObjectHierarchy getCurrentHierarchy() { imageData?.getHierarchy() }

    static ImageServer<BufferedImage> getCurrentServer() { imageData?.getServer() }

    static Collection<PathObject> getSelectedObjects() {
        def hierarchy = getCurrentHierarchy()
        hierarchy == null ? [] : new ArrayList<>(hierarchy.getSelectionModel().getSelectedObjects())
    }

    static Collection<PathObject> getAnnotationObjects() {
        def hierarchy = getCurrentHierarchy()
        hierarchy == null ? [] : hierarchy.getAnnotationObjects()
    }

    static void fireHierarchyUpdate() {
        getCurrentHierarchy()?.fireHierarchyChangedEvent(QuPathEntryPoint)
    }

    static List<PathObject> toPathObjects(String geoJson) {
        toPathObjects(GsonTools.getInstance().fromJson(geoJson, JsonElement))
    }

    static List<PathObject> toPathObjects(JsonElement element) {
        if (element.isJsonArray())
            return element.getAsJsonArray().asList().collectMany { toPathObjects(it) }
        if (!element.isJsonObject() || element.getAsJsonObject().size() == 0)
            return []
        def object = element.getAsJsonObject()
        if (object.has('features'))
            return toPathObjects(object.get('features'))
        return [GsonTools.getInstance().fromJson(object, PathObject)]
    }

    static String toFeatureCollection(Collection<? extends PathObject> pathObjects) {
        GsonTools.getInstance().toJson(FeatureCollection.wrap(pathObjects))
    }

    static List<String> toFeatureCollections(Collection<? extends PathObject> pathObjects, int chunkSize) {
        new ArrayList<>(pathObjects).collate(chunkSize).collect { toFeatureCollection(it) }
    }

    static List<String> getObjectIds(Collection<? extends PathObject> pathObjects) {
        pathObjects.collect { it.getID().toString() }
    }

    static byte[] getImageBytes(ImageServer<BufferedImage> server, double downsample, int x, int y, int width,
                                int height, int z, int t, String format) {
        getImageBytes(server, RegionRequest.createInstance(server.getPath(), downsample, x, y, width, height, z, t), format)
    }

    static byte[] getImageBytes(ImageServer<BufferedImage> server, RegionRequest request, String format) {
        if (format.toLowerCase() in ['imagej tiff', 'imagej tif'])
            return new FileSaver(IJTools.convertToImagePlus(server, request).getImage()).serialize()
        def stream = new ByteArrayOutputStream()
        ImageIO.write(server.readRegion(request), format, stream)
        return stream.toByteArray()
    }
}

// The entry's image server as the project stores it; a project written by qpsam names Bio-Formats, which the harness
// lacks, and then QuPath's ImageServerProvider picks a server for the same file (the ImageJ server for a TIFF).
ImageData<BufferedImage> readImageData(ProjectImageEntry<BufferedImage> entry) {
    def imageData = entry.readImageData()
    try {
        imageData.getServer()
        return imageData
    } catch (Exception e) {
        def uri = entry.getURIs().iterator().next()
        def server = ImageServerProvider.buildServer(uri.toString(), BufferedImage)
        return new ImageData<BufferedImage>(server, entry.readHierarchy(), imageData.getImageType())
    }
}

if (args.length != 4) {
    System.err.println('usage: live_gateway.groovy PROJECT.qpproj IMAGE PORT TOKEN')
    System.exit(2)
}
QP.getCoreClasses()  // registers QuPath's GeoJSON type adapters, as QuPath does on start
def project = ProjectIO.loadProject(new File(args[0]), BufferedImage)
ProjectImageEntry<BufferedImage> findEntry(Project<BufferedImage> project, String image) {
    project.getImageList().find { it.getID() == image } ?: project.getImageList().find { it.getImageName() == image }
}

def entry = findEntry(project, args[1])
if (entry == null) {
    System.err.println("no image ${args[1]} in ${args[0]}")
    System.exit(2)
}
QuPathEntryPoint.project = project
QuPathEntryPoint.entry = entry
QuPathEntryPoint.imageData = readImageData(entry)
System.err.println("[live-gateway] ${entry.getImageName()}: ${QuPathEntryPoint.imageData.getServer().getServerType()}")

def server = new GatewayServer.GatewayServerBuilder()
        .entryPoint(new QuPathEntryPoint())
        .javaPort(args[2] as int)
        .authToken(args[3] == '-' ? null : args[3])
        .build()
server.start()
println "READY ${server.getListeningPort()}"
System.out.flush()

def input = new BufferedReader(new InputStreamReader(System.in))
String line
while ((line = input.readLine()) != null) {
    if (line.startsWith('open ')) {
        def next = findEntry(project, line.substring(5).trim())
        if (next == null) {
            println "UNKNOWN ${line}"
        } else {
            entry = next
            QuPathEntryPoint.entry = entry
            QuPathEntryPoint.imageData = readImageData(entry)
            println "OPENED ${entry.getImageName()}"
        }
        System.out.flush()
        continue
    }
    switch (line.trim()) {
        case 'stop':
            server.shutdown()
            println 'STOPPED'
            break
        case 'save':
            entry.saveImageData(QuPathEntryPoint.imageData)
            project.syncChanges()
            println "SAVED ${QuPathEntryPoint.imageData.getHierarchy().getAllObjects(false).size()}"
            break
        case 'quit':
            server.shutdown()
            System.exit(0)
        default:
            println "UNKNOWN ${line}"
    }
    System.out.flush()
}
server.shutdown()
System.exit(0)
